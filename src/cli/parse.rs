//! `cairn parse`: print a Dockerfile's stages and instructions, as a readable listing or as
//! the JSON document of `dockerfile::to_json`. The file is read and parsed by the same
//! front end as `cairn build` (`executor::frontend`); a bad Dockerfile exits with code 2.

use super::{OutputFormat, ParseArgs};
use crate::dockerfile;
use crate::error::{Error, Result};
use crate::executor::frontend;

pub fn parse(args: &ParseArgs) -> Result<()> {
    let text = frontend::read_dockerfile(&args.file)?;
    let df = frontend::parse(&args.file, &text)?;
    match args.format {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(&dockerfile::to_json(&df)).map_err(|e| {
                Error::Json {
                    what: "cannot write the parse as JSON".into(),
                    source: e,
                }
            })?;
            println!("{text}");
        }
        OutputFormat::Text => print!("{}", dockerfile::to_text(&df)),
    }
    Ok(())
}
