//! The build's event sink, under the name the executor has always used: [`Reporter`] and
//! its [`Event`]s live in [`crate::events`], which every module reports through.

pub use crate::events::{secs, Event, Mode, Reporter};
