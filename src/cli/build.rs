//! `cairn build` and `cairn key`: options validated here, the work done by the executor.

use super::{BuildArgs, Cli};
use crate::error::Result;

pub fn build(_cli: &Cli, _args: &BuildArgs) -> Result<()> {
    Err(super::not_yet("build"))
}

pub fn key(_cli: &Cli, _args: &BuildArgs) -> Result<()> {
    Err(super::not_yet("key"))
}
