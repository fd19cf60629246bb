//! The gRPC service: thin handlers over [`Imgapi`], with the upload streams turned into
//! a header plus a stream of chunks.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_util::io::ReaderStream;
use tonic::{Status, Streaming};
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
    mut stream: Streaming<T>,
) -> Result<
    (
        T::Header,
        impl Stream<Item = Result<Vec<u8>, Error>> + Unpin + Send,
    ),
    Status,
> {
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

type GetImageFileStream =
    Pin<Box<dyn Stream<Item = Result<proto::ImageFileChunk, Status>> + Send + 'static>>;

triton_common::grpc_handlers! {
    impl ImgapiRpc for ImgapiService;
    handlers {
        ping(proto::PingRequest) -> proto::PingResponse [] |h, _r| {
            h.app.ping().await?;
            proto::PingResponse {
                status: "OK".into(),
            }
        };
        create_image(proto::CreateImageRequest) -> proto::Image [] |h, r| {
            let manifest = r
                .manifest
                .ok_or_else(|| Error::invalid("manifest", "is required"))?;
            h.app.create_image(manifest).await?.into()
        };
        import_image(Streaming<proto::ImportImageRequest>) -> proto::Image [] |h, r| {
            let (header, chunks) = upload(r).await?;
            h.app.import_image(header, chunks).await?.into()
        };
        add_image_file(Streaming<proto::AddImageFileRequest>) -> proto::Image [] |h, r| {
            let (header, chunks) = upload(r).await?;
            h.app.add_image_file(header, chunks).await?.into()
        };
        activate_image(proto::ImageRequest) -> proto::Image [uuid = uuid]
            |h, r| h.app.activate_image(&r.uuid).await?.into();
        disable_image(proto::ImageRequest) -> proto::Image [uuid = uuid]
            |h, r| h.app.disable_image(&r.uuid).await?.into();
        enable_image(proto::ImageRequest) -> proto::Image [uuid = uuid]
            |h, r| h.app.enable_image(&r.uuid).await?.into();
        get_image(proto::ImageRequest) -> proto::Image [uuid = uuid] |h, r| {
            match &r.account {
                Some(account) => h.app.get_image_for(&r.uuid, account).await?,
                None => h.app.get_image(&r.uuid).await?,
            }
            .into()
        };
        list_images(proto::ListImagesRequest) -> proto::ListImagesResponse [] |h, r| {
            let images = h.app.list_images(r).await?;
            proto::ListImagesResponse {
                images: images.into_iter().map(Into::into).collect(),
            }
        };
        get_image_file(proto::ImageRequest) -> GetImageFileStream [uuid = uuid] |h, r| {
            let (_, file) = h.app.open_file(&r.uuid).await?;
            let stream = ReaderStream::with_capacity(file, FILE_CHUNK_BYTES).map(|chunk| {
                chunk
                    .map(|data| proto::ImageFileChunk {
                        data: data.to_vec(),
                    })
                    .map_err(|e| Status::from(Error::io("cannot read the image file")(e)))
            });
            Box::pin(stream)
        };
        delete_image(proto::ImageRequest) -> proto::DeleteImageResponse [uuid = uuid] |h, r| {
            h.app.delete_image(&r.uuid).await?;
            proto::DeleteImageResponse {}
        };
    }

    type GetImageFileStream = GetImageFileStream;
}
