//! cnapi
