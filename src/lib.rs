//! cairn builds container images from Dockerfiles without a daemon, BuildKit, runc or crun.
//!
//! The pipeline (see `docs/DESIGN.md`) is one module per stage: [`dockerfile`] reads the
//! file, [`plan`] orders the stages, [`context`] hashes COPY/ADD sources, [`git`] resolves
//! and checks out ADD's git repositories, [`registry`] pulls bases into the [`store`] (and
//! pushes images), [`rootfs`] unpacks layers and [`sandbox`] runs `RUN` steps with their
//! [`mounts`], [`layer`] turns changes into OCI layers, [`image`] writes configs and
//! manifests, [`export`] hands the result to Docker or a file, [`remote_cache`] shares step
//! results through a registry, and [`executor`] walks the plan, keyed on [`cache`] keys
//! that depend on nothing but a step's inputs. Below them, [`userns`] (the privilege
//! broker), [`overlay`], [`stack`] and [`redact`] (credentials in URLs) are shared
//! vocabulary. Everything the user is told on the way goes through one sink, [`events`].

pub mod cache;
pub mod cli;
pub mod codec;
pub mod context;
pub mod digest;
pub mod dockerfile;
pub mod error;
pub mod events;
pub mod executor;
pub mod export;
pub mod git;
pub mod idmap;
pub mod image;
pub mod layer;
pub mod mounts;
pub mod overlay;
pub mod plan;
pub mod platform;
pub mod redact;
pub mod registry;
pub mod remote_cache;
pub mod rootfs;
pub mod sandbox;
pub mod stack;
pub mod store;
pub mod userns;

pub use digest::Digest;
pub use error::{Error, ExitCode, Result};
pub use platform::Platform;
