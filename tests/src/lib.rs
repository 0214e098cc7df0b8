//! placeholder
pub mod fake_kube;
