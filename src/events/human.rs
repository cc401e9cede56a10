//! Events as plain lines: what `--progress=plain` writes, what the live view prints above
//! its running steps once something is final, and the closing summary. No escape
//! sequences and no carriage returns here, ever.

use super::{human_size, Event, Phase};
use std::io::Write;

/// Writes `ev` as plain lines. `timings` adds each step's phase times to its `DONE`
/// line; `explain` adds each step's cache key.
pub(super) fn write(
    w: &mut dyn Write,
    ev: &Event<'_>,
    timings: bool,
    explain: bool,
) -> std::io::Result<()> {
    match ev {
        Event::Step {
            step,
            total,
            stage,
            text,
            key,
            cached,
        } => {
            writeln!(w, "#{step} [{stage} {step}/{total}] {text}")?;
            if explain {
                writeln!(w, "#{step} key {key}")?;
            }
            if *cached {
                writeln!(w, "#{step} CACHED")?;
            }
            Ok(())
        }
        Event::Explain { step, reasons } => {
            for r in reasons.iter() {
                writeln!(w, "#{step} miss: {r}")?;
            }
            Ok(())
        }
        Event::Output { step, line } => writeln!(w, "#{step} {}", plain_text(line)),
        Event::Done {
            step,
            seconds,
            stages,
        } => {
            if timings && !stages.is_empty() {
                let parts: Vec<String> =
                    stages.iter().map(|(n, s)| format!("{n} {s:.2}s")).collect();
                writeln!(w, "#{step} DONE {seconds:.1}s ({})", parts.join(", "))
            } else {
                writeln!(w, "#{step} DONE {seconds:.1}s")
            }
        }
        Event::Canceled { step } => writeln!(w, "#{step} CANCELED"),
        Event::Info { message } => writeln!(w, "{message}"),
        Event::Warning { message } => writeln!(w, "warning: {message}"),
        Event::Transfer {
            kind,
            id,
            phase,
            bytes,
            total,
            seconds,
        } => {
            let (doing, did) = kind.verbs();
            match phase {
                Phase::Start => match total {
                    Some(t) => writeln!(w, "{doing} {id} ({})", human_size(*t)),
                    None => writeln!(w, "{doing} {id}"),
                },
                Phase::Progress => Ok(()),
                Phase::Done => writeln!(w, "{did} {id} ({}) in {seconds:.1}s", human_size(*bytes)),
            }
        }
        Event::Exported { .. } | Event::Summary { .. } => Ok(()),
        Event::Finished {
            image_id,
            all_cached,
            ..
        } => writeln!(
            w,
            "built {image_id}{}",
            if *all_cached {
                " (all steps cached)"
            } else {
                ""
            }
        ),
        // The CLI prints the error itself, last, as `cairn: error: …`.
        Event::Error { .. } => Ok(()),
    }
}

/// A program's output line made safe for line-by-line readers and for the live view:
/// what a carriage return would have overwritten is dropped (progress meters redraw
/// their line that way), tabs become spaces, and other control characters (colours,
/// cursor movement) go.
pub(super) fn plain_text(line: &str) -> String {
    let shown = line
        .trim_end_matches('\r')
        .rsplit('\r')
        .next()
        .unwrap_or_default();
    let stripped = console::strip_ansi_codes(shown);
    let mut out = String::with_capacity(stripped.len());
    for c in stripped.chars() {
        match c {
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// What the closing summary reports.
pub(super) struct SummaryFacts<'a> {
    pub steps: usize,
    pub cached: usize,
    pub seconds: f64,
    /// Bytes by what moved them (`pulled`, `written`, `loaded`, `pushed`, `downloaded`).
    pub bytes: [(&'static str, u64); 5],
    pub image_id: &'a str,
    pub dests: &'a [String],
}

/// The closing summary: steps run and cached with the time, the bytes moved, the image
/// and where it went.
pub(super) fn summary(f: &SummaryFacts<'_>) -> Vec<String> {
    let mut lines = vec![format!(
        "{} steps: {} run, {} cached in {:.1}s",
        f.steps,
        f.steps - f.cached,
        f.cached,
        f.seconds
    )];
    let moved: Vec<String> = f
        .bytes
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{} {what}", human_size(*n)))
        .collect();
    if !moved.is_empty() {
        lines.push(moved.join(", "));
    }
    let mut image = format!("image {}", f.image_id);
    if !f.dests.is_empty() {
        image.push_str(&format!(" -> {}", f.dests.join(", ")));
    }
    lines.push(image);
    lines
}
