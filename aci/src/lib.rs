//! App Container (appc 0.8.11) images, shared by `builder` and the guest's `init`: manifests and
//! their validation, ACI archives, minisign signatures, trust, discovery, fetch and the store.

pub mod archive;
pub mod discovery;
pub mod manifest;
pub mod sign;
pub mod store;
pub mod trust;
