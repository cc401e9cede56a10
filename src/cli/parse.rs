//! `cairn parse`: print a Dockerfile's stages and instructions, as a readable listing or as
//! the JSON document of `dockerfile::to_json`. A bad Dockerfile exits with code 2.

use super::{OutputFormat, ParseArgs};
use crate::dockerfile;
use crate::error::{Error, Result};

pub fn parse(args: &ParseArgs) -> Result<()> {
    let src = std::fs::read_to_string(&args.file)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let name = args.file.display().to_string();
    let df = dockerfile::parse(&src, &name)?;
    match args.format {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(&dockerfile::to_json(&df))
                .map_err(|e| Error::Internal(e.to_string()))?;
            println!("{text}");
        }
        OutputFormat::Text => print!("{}", dockerfile::to_text(&df)),
    }
    Ok(())
}
