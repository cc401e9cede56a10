//! `cairn parse`: print a Dockerfile's stages and instructions.

use super::ParseArgs;
use crate::error::Result;

pub fn parse(_args: &ParseArgs) -> Result<()> {
    Err(super::not_yet("parse"))
}
