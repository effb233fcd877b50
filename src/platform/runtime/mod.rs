//! Where instances run. For now the building blocks of the local runtime; the `Runtime` trait
//! of DESIGN.md (apply, delete, pause/resume, scale, status, logs, usage, connect) and the
//! Kubernetes runtime are built on top of them.

pub mod local;
