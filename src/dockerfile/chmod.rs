//! [`Chmod`]: a `COPY`/`ADD --chmod` value, parsed once where the Dockerfile is planned and
//! applied per copied entry. BuildKit takes an octal mode up to `07777`, or a symbolic mode
//! as BSD `chmod(1)` reads it (`go-w`, `u+x`, `a=rX,u+w`, `g=u`) with a umask of 0, applied
//! to each source's own mode.
//!
//! Hand-written: the crates that parse symbolic modes implement GNU chmod (umask-dependent
//! `+x`, different `X` and `s` handling); BuildKit's vendored parser is BSD `setmode`, and
//! the mode it produces reaches every cache key.

use std::fmt;

const SUID: u32 = 0o4000;
const SGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
const USER: u32 = 0o700;
const GROUP: u32 = 0o070;
const OTHER: u32 = 0o007;
const ALL_X: u32 = 0o111;
/// What `a` (or no "who" at all, for `=`) covers: everything but the sticky bit.
const STANDARD: u32 = SUID | SGID | USER | GROUP | OTHER;

/// A parsed `--chmod`, keeping the text as written (the cache key uses the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Octal(u32),
    Symbolic(Vec<Op>),
}

/// One step of a symbolic mode, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Set(u32),
    Clear(u32),
    /// `X`: set these bits when the entry is a directory or already executable by anyone.
    SetIfExec(u32),
    /// `u`/`g`/`o` after an operator: copy that class's current bits to the classes in
    /// `to` (bits of `who`), clearing first for `-` and `=`, setting for `+` and `=`.
    Copy {
        from_shift: u32,
        to: u32,
        clear: bool,
        set: bool,
    },
}

/// The message BuildKit gives for a numeric value it refuses.
fn non_octal(text: &str) -> String {
    format!("invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777")
}

impl Chmod {
    /// Parses `--chmod=` after expansion.
    pub fn parse(text: &str) -> Result<Chmod, String> {
        let kind = if text.starts_with(|c: char| c.is_ascii_digit()) {
            match u32::from_str_radix(text, 8) {
                Ok(v) if v <= 0o7777 => Kind::Octal(v),
                _ => return Err(non_octal(text)),
            }
        } else {
            Kind::Symbolic(
                symbolic(text)
                    .ok_or_else(|| format!("invalid chmod parameter: '{text}': invalid syntax"))?,
            )
        };
        Ok(Chmod {
            text: text.to_string(),
            kind,
        })
    }

    /// An octal mode (bits above `0o7777` dropped).
    pub fn octal(mode: u32) -> Chmod {
        Chmod {
            text: format!("{:o}", mode & 0o7777),
            kind: Kind::Octal(mode & 0o7777),
        }
    }

    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The permission bits (`0o7777`) of an entry whose own bits are `mode` after this
    /// `--chmod`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let ops = match &self.kind {
            Kind::Octal(v) => return *v,
            Kind::Symbolic(ops) => ops,
        };
        let original = mode & 0o7777;
        let mut m = original;
        for op in ops {
            match *op {
                Op::Set(b) => m |= b,
                Op::Clear(b) => m &= !b,
                Op::SetIfExec(b) => {
                    if is_dir || original & ALL_X != 0 {
                        m |= b
                    }
                }
                Op::Copy {
                    from_shift,
                    to,
                    clear,
                    set,
                } => {
                    let value = (m >> from_shift) & 0o7;
                    for (class, shift) in [(USER, 6), (GROUP, 3), (OTHER, 0)] {
                        if to & class == 0 {
                            continue;
                        }
                        if clear {
                            m &= !((if set { 0o7 } else { value }) << shift);
                        }
                        if set {
                            m |= value << shift;
                        }
                    }
                }
            }
        }
        m & 0o7777
    }
}

impl fmt::Display for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `clause[,clause...]`, clause = `[ugoa]*` then one or more `op perms`, as BSD `setmode`.
fn symbolic(s: &str) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        let mut who = 0;
        while let Some(c) = b.get(i) {
            who |= match c {
                b'a' => STANDARD,
                b'u' => SUID | USER,
                b'g' => SGID | GROUP,
                b'o' => OTHER,
                _ => break,
            };
            i += 1;
        }
        // One or more `op perms` share this clause's "who".
        loop {
            let op = *b.get(i)?;
            if !matches!(op, b'+' | b'-' | b'=') {
                return None;
            }
            i += 1;
            let mut who = who;
            let (mut perm, mut perm_x) = (0u32, 0u32);
            let mut copied = false;
            while let Some(&c) = b.get(i) {
                match c {
                    b'r' => perm |= 0o444,
                    b'w' => perm |= 0o222,
                    b'x' => perm |= ALL_X,
                    b'X' if op == b'-' => perm |= ALL_X,
                    b'X' => perm_x = ALL_X,
                    b's' if who == 0 || who & !OTHER != 0 => perm |= SUID | SGID,
                    b't' if who == 0 || who & !OTHER != 0 => {
                        who |= STICKY;
                        perm |= STICKY;
                    }
                    b's' | b't' => {}
                    b'u' | b'g' | b'o' => {
                        if perm != 0 {
                            push(&mut ops, op, who, perm);
                            perm = 0;
                        }
                        copied = true;
                        if perm_x != 0 {
                            ops.push(Op::SetIfExec(masked(who, perm_x)));
                            perm_x = 0;
                        }
                        let from_shift = match c {
                            b'u' => 6,
                            b'g' => 3,
                            _ => 0,
                        };
                        ops.push(Op::Copy {
                            from_shift,
                            to: if who == 0 { USER | GROUP | OTHER } else { who },
                            clear: op != b'+',
                            set: op != b'-',
                        });
                    }
                    _ => break,
                }
                i += 1;
            }
            if perm != 0 || (op == b'=' && !copied) {
                push(&mut ops, op, who, perm);
            }
            if perm_x != 0 {
                ops.push(Op::SetIfExec(masked(who, perm_x)));
            }
            match b.get(i) {
                None => return Some(ops),
                Some(b',') => {
                    i += 1;
                    break;
                }
                Some(_) => {}
            }
        }
    }
}

/// The bits an operator touches: `perm` limited to "who" (all bits when none was given).
fn masked(who: u32, perm: u32) -> u32 {
    if who == 0 {
        perm
    } else {
        who & perm
    }
}

fn push(ops: &mut Vec<Op>, op: u8, who: u32, perm: u32) {
    match op {
        b'+' => ops.push(Op::Set(masked(who, perm))),
        b'-' => ops.push(Op::Clear(masked(who, perm))),
        _ => {
            ops.push(Op::Clear(if who == 0 { STANDARD } else { who }));
            ops.push(Op::Set(masked(who, perm)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Chmod;

    fn apply(mode: &str, from: u32, is_dir: bool) -> u32 {
        Chmod::parse(mode).unwrap().apply(from, is_dir)
    }

    #[test]
    fn octal_values_up_to_7777() {
        assert_eq!(apply("755", 0o600, false), 0o755);
        assert_eq!(apply("0644", 0o777, true), 0o644);
        assert_eq!(apply("7777", 0, false), 0o7777);
        for bad in ["10000", "8", "0o755", "755x", "99999999999"] {
            assert_eq!(
                Chmod::parse(bad).unwrap_err(),
                format!("invalid chmod parameter: '{bad}'. it should be octal string and between 0 and 07777")
            );
        }
        assert_eq!(Chmod::octal(0o755).as_str(), "755");
    }

    #[test]
    fn symbolic_modes_as_bsd_chmod_with_no_umask() {
        let table: &[(&str, u32, bool, u32)] = &[
            ("go-w", 0o777, false, 0o755),
            ("u+x", 0o644, false, 0o744),
            ("+x", 0o644, false, 0o755),
            ("a-x", 0o755, true, 0o644),
            ("a=r", 0o777, false, 0o444),
            ("u=rw,g=r,o=", 0o777, false, 0o640),
            ("o=", 0o777, false, 0o770),
            ("a=rX", 0o600, false, 0o444),
            ("a=rX", 0o700, false, 0o555),
            ("a=rX", 0o600, true, 0o555),
            ("u+s", 0o755, false, 0o4755),
            ("g+s", 0o755, true, 0o2755),
            ("+t", 0o755, true, 0o1755),
            ("o+t", 0o755, true, 0o755),
            ("u+x-w", 0o644, false, 0o544),
            ("g=u", 0o740, false, 0o770),
            ("o+g", 0o750, false, 0o755),
            ("go=u-w", 0o750, false, 0o755),
            ("=", 0o4755, false, 0),
            ("u-X", 0o644, false, 0o644),
            ("g=u", 0o2740, false, 0o2770),
        ];
        for &(mode, from, dir, want) in table {
            assert_eq!(
                apply(mode, from, dir),
                want,
                "{mode} on {from:o} (dir {dir})"
            );
        }
    }

    #[test]
    fn symbolic_syntax_errors() {
        for bad in ["", "u", "u+q", "x+u", "u+x,", ",u+x", "u*x", "a+r w"] {
            assert_eq!(
                Chmod::parse(bad).unwrap_err(),
                format!("invalid chmod parameter: '{bad}': invalid syntax"),
                "{bad:?}"
            );
        }
    }
}
