//! The gRPC service: thin handlers over [`Imgapi`], with the upload streams turned into
//! a header plus a stream of chunks.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_util::io::ReaderStream;
use tonic::{Request, Response, Status, Streaming};
use triton_proto::imgapi::v1 as proto;
use triton_proto::imgapi::v1::imgapi_server::Imgapi as ImgapiRpc;

use crate::app::Imgapi;
use crate::error::Error;

/// Full gRPC service name, for the health service.
pub const SERVICE_NAME: &str = "triton.imgapi.v1.Imgapi";
/// Bytes per message when sending a file: well under gRPC's 4 MiB default message cap.
pub const FILE_CHUNK_BYTES: usize = 1024 * 1024;

pub struct ImgapiService {
    app: Arc<Imgapi>,
}

impl ImgapiService {
    pub fn new(app: Arc<Imgapi>) -> Self {
        ImgapiService { app }
    }
}

type R<T> = Result<Response<T>, Status>;

fn image(m: crate::manifest::Manifest) -> R<proto::Image> {
    Ok(Response::new(m.into()))
}

/// Upload messages: a header (the first) or a chunk (every one after it).
trait Part {
    type Header;
    fn header(self) -> Option<Self::Header>;
    fn chunk(self) -> Option<Vec<u8>>;
}

/// [`Part`] for an upload request `$request` whose `part` oneof is `$oneof::Part`.
macro_rules! upload_part {
    ($request:ident, $header:ident, $oneof:ident) => {
        impl Part for proto::$request {
            type Header = proto::$header;
            fn header(self) -> Option<proto::$header> {
                match self.part {
                    Some(proto::$oneof::Part::Header(h)) => Some(h),
                    _ => None,
                }
            }
            fn chunk(self) -> Option<Vec<u8>> {
                match self.part {
                    Some(proto::$oneof::Part::Chunk(c)) => Some(c),
                    _ => None,
                }
            }
        }
    };
}

upload_part!(ImportImageRequest, ImportImageHeader, import_image_request);
upload_part!(
    AddImageFileRequest,
    AddImageFileHeader,
    add_image_file_request
);

/// An upload: its header, which must be the first message, and the chunks after it.
async fn upload<T: Part + Send + 'static>(
    r: Request<Streaming<T>>,
) -> Result<
    (
        T::Header,
        impl Stream<Item = Result<Vec<u8>, Error>> + Unpin + Send,
    ),
    Status,
> {
    let mut stream = r.into_inner();
    let header = stream
        .message()
        .await?
        .and_then(Part::header)
        .ok_or_else(|| {
            Error::invalid(
                "header",
                "the first message of an upload must be its header",
            )
        })?;
    Ok((header, chunks(stream)))
}

/// The messages after the header, as file chunks.
fn chunks<T: Part + Send + 'static>(
    stream: Streaming<T>,
) -> impl Stream<Item = Result<Vec<u8>, Error>> + Unpin + Send {
    stream.map(|m| match m {
        Ok(m) => m
            .chunk()
            .ok_or_else(|| Error::invalid("chunk", "only the first message may be a header")),
        Err(status) => Err(Error::Upload(status.message().to_string())),
    })
}

#[tonic::async_trait]
impl ImgapiRpc for ImgapiService {
    async fn ping(&self, _: Request<proto::PingRequest>) -> R<proto::PingResponse> {
        self.app.ping().await?;
        Ok(Response::new(proto::PingResponse {
            status: "OK".into(),
        }))
    }

    async fn create_image(&self, r: Request<proto::CreateImageRequest>) -> R<proto::Image> {
        let manifest = r
            .into_inner()
            .manifest
            .ok_or_else(|| Error::invalid("manifest", "is required"))?;
        image(self.app.create_image(manifest).await?)
    }

    async fn import_image(
        &self,
        r: Request<Streaming<proto::ImportImageRequest>>,
    ) -> R<proto::Image> {
        let (header, chunks) = upload(r).await?;
        image(self.app.import_image(header, chunks).await?)
    }

    async fn add_image_file(
        &self,
        r: Request<Streaming<proto::AddImageFileRequest>>,
    ) -> R<proto::Image> {
        let (header, chunks) = upload(r).await?;
        image(self.app.add_image_file(header, chunks).await?)
    }

    async fn activate_image(&self, r: Request<proto::ImageRequest>) -> R<proto::Image> {
        image(self.app.activate_image(&r.into_inner().uuid).await?)
    }

    async fn disable_image(&self, r: Request<proto::ImageRequest>) -> R<proto::Image> {
        image(self.app.disable_image(&r.into_inner().uuid).await?)
    }

    async fn enable_image(&self, r: Request<proto::ImageRequest>) -> R<proto::Image> {
        image(self.app.enable_image(&r.into_inner().uuid).await?)
    }

    async fn get_image(&self, r: Request<proto::ImageRequest>) -> R<proto::Image> {
        let r = r.into_inner();
        match &r.account {
            Some(account) => image(self.app.get_image_for(&r.uuid, account).await?),
            None => image(self.app.get_image(&r.uuid).await?),
        }
    }

    async fn list_images(
        &self,
        r: Request<proto::ListImagesRequest>,
    ) -> R<proto::ListImagesResponse> {
        let images = self.app.list_images(r.into_inner()).await?;
        Ok(Response::new(proto::ListImagesResponse {
            images: images.into_iter().map(Into::into).collect(),
        }))
    }

    type GetImageFileStream =
        Pin<Box<dyn Stream<Item = Result<proto::ImageFileChunk, Status>> + Send + 'static>>;

    async fn get_image_file(&self, r: Request<proto::ImageRequest>) -> R<Self::GetImageFileStream> {
        let (_, file) = self.app.open_file(&r.into_inner().uuid).await?;
        let stream = ReaderStream::with_capacity(file, FILE_CHUNK_BYTES).map(|chunk| {
            chunk
                .map(|data| proto::ImageFileChunk {
                    data: data.to_vec(),
                })
                .map_err(|e| Status::from(Error::io("cannot read the image file")(e)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn delete_image(&self, r: Request<proto::ImageRequest>) -> R<proto::DeleteImageResponse> {
        self.app.delete_image(&r.into_inner().uuid).await?;
        Ok(Response::new(proto::DeleteImageResponse {}))
    }
}
