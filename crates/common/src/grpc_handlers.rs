//! The handlers of a gRPC service that only take the request, call the service and wrap
//! its answer, written once ([`crate::grpc_handlers!`]).

/// `impl Rpc for Handler` from one entry per RPC: its name, request and answer types, the
/// request fields its trace span shows, and the answer made from the handler `h` (the
/// `&self` of the impl) and the request `r` (taken by value, `_` when unused; `?` turns the service's
/// errors into a `Status`). Items written by hand (stream types, handlers that do more)
/// follow the `handlers { ... }` block.
///
/// ```ignore
/// triton_common::grpc_handlers! {
///     impl PapiRpc for Handler;
///     handlers {
///         get_package(proto::GetPackageRequest) -> proto::Package [uuid = uuid]
///             |h, r| to_proto(h.papi.get(&r.uuid, &r.owner_uuids).await?);
///     }
/// }
/// ```
///
/// Every handler runs in a span named after the RPC (`tracing::instrument`); the caller
/// depends on `tonic` and `tracing`.
#[macro_export]
macro_rules! grpc_handlers {
    (
        impl $rpc:ident for $handler:ty;
        handlers {$(
            $method:ident($req:ty) -> $answer:ty [$($span:ident = $field:ident),*]
                |$h:ident, $r:tt| $body:expr;
        )*}
        $($rest:tt)*
    ) => {
        #[::tonic::async_trait]
        impl $rpc for $handler {
            $(
                #[::tracing::instrument(skip_all, fields($($span = %request.get_ref().$field),*))]
                async fn $method(
                    &self,
                    request: ::tonic::Request<$req>,
                ) -> ::std::result::Result<::tonic::Response<$answer>, ::tonic::Status> {
                    let ($h, $r) = (self, request.into_inner());
                    ::std::result::Result::Ok(::tonic::Response::new($body))
                }
            )*
            $($rest)*
        }
    };
}
