//! `cairn pull`, `cairn inspect` and `cairn cache`: the store's commands.

use super::{CacheArgs, Cli, InspectArgs, PullArgs};
use crate::error::Result;

pub fn pull(_cli: &Cli, _args: &PullArgs) -> Result<()> {
    Err(super::not_yet("pull"))
}

pub fn inspect(_cli: &Cli, _args: &InspectArgs) -> Result<()> {
    Err(super::not_yet("inspect"))
}

pub fn cache(_cli: &Cli, _args: &CacheArgs) -> Result<()> {
    Err(super::not_yet("cache"))
}
