use super::*;

/// A writer the test can read back after the reporter wrote into it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn reporter(mode: Mode) -> (Reporter, Shared) {
    let buf = Shared::default();
    (Reporter::to_writer(mode, false, Box::new(buf.clone())), buf)
}

/// A short build's worth of events, through every kind the sink knows.
fn some_build(rep: &Reporter) {
    let t = rep.transfer(TransferKind::Pull, "sha256:abc", Some(2_000_000));
    t.inc(1_000_000);
    t.inc(1_000_000);
    t.finish();
    rep.emit(&Event::Step {
        step: 1,
        total: 2,
        stage: "stage-0",
        text: "RUN apt-get update",
        key: "sha256:k1",
        cached: false,
    });
    rep.emit(&Event::Output {
        step: 1,
        line: "\x1b[1mGet:1\x1b[0m http://deb\tmain\r 50%\r100%",
    });
    rep.warn("overlayfs unavailable");
    rep.emit(&Event::Done {
        step: 1,
        seconds: 1.25,
        stages: &[],
    });
    rep.emit(&Event::Step {
        step: 2,
        total: 2,
        stage: "stage-0",
        text: "LABEL a=b",
        key: "sha256:k2",
        cached: true,
    });
    rep.exported("docker (app:dev)");
    rep.emit(&Event::Finished {
        image_id: "sha256:img",
        cache_key: "sha256:k2",
        all_cached: false,
    });
}

#[test]
fn plain_lines_carry_no_escape_or_carriage_return() {
    let (rep, buf) = reporter(Mode::Plain);
    some_build(&rep);
    let text = buf.text();
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(!text.contains('\r'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "pulling sha256:abc (1.9 MiB)",
            lines[1], // the time varies
            "#1 [stage-0 1/2] RUN apt-get update",
            "#1 100%",
            "warning: overlayfs unavailable",
            "#1 DONE 1.2s",
            "#2 [stage-0 2/2] LABEL a=b",
            "#2 CACHED",
            "built sha256:img",
        ]
    );
    assert!(
        lines[1].starts_with("pulled  sha256:abc (1.9 MiB) in "),
        "{}",
        lines[1]
    );
}

#[test]
fn json_is_one_event_per_line_with_a_closing_summary() {
    let (rep, buf) = reporter(Mode::Json);
    some_build(&rep);
    rep.fail(&crate::Error::Usage("bad flag".into()));
    let events: Vec<serde_json::Value> = buf
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "transfer", "transfer", "step", "output", "warning", "done", "step", "exported",
            "finished", "summary", "error"
        ]
    );
    assert_eq!(events[1]["phase"], "done");
    assert_eq!(events[1]["bytes"], 2_000_000);
    // JSON keeps the line as the program wrote it; only the human forms clean it.
    assert_eq!(
        events[3]["line"],
        "\x1b[1mGet:1\x1b[0m http://deb\tmain\r 50%\r100%"
    );
    assert_eq!(events[4]["message"], "overlayfs unavailable");
    let s = &events[9];
    assert_eq!(
        (s["steps"].as_u64(), s["cached"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(s["pulled"], 2_000_000);
    assert_eq!(events[10]["exit_code"], 2);
}

#[test]
fn quiet_writes_nothing() {
    let (rep, buf) = reporter(Mode::Quiet);
    some_build(&rep);
    assert_eq!(buf.text(), "");
}

#[test]
fn auto_picks_the_live_view_only_on_a_capable_terminal() {
    // (stderr is a terminal, TERM, NO_COLOR) -> mode
    let table = [
        (true, Some("xterm-256color"), false, Mode::Tty),
        (true, None, false, Mode::Tty),
        (true, Some("dumb"), false, Mode::Plain),
        (true, Some("xterm"), true, Mode::Plain),
        (false, Some("xterm"), false, Mode::Plain),
        (false, None, false, Mode::Plain),
    ];
    for (tty, term, no_color, want) in table {
        assert_eq!(
            Mode::detect_from(tty, term, no_color),
            want,
            "{tty} {term:?} {no_color}"
        );
    }
}

#[test]
fn tty_options_from_values() {
    let d = TtyOptions::DEFAULT_LOG_LINES;
    let table = [
        (None, false, d, true),
        (Some("3"), false, 3, true),
        (Some(" 0 "), false, 0, true),
        (Some("many"), true, d, false),
        (Some("100000"), false, d, true),
    ];
    for (lines, no_color, want_lines, want_color) in table {
        let o = TtyOptions::from_values(lines, no_color);
        assert_eq!(
            (o.log_lines, o.color),
            (want_lines, want_color),
            "{lines:?}"
        );
    }
}

#[test]
fn program_output_is_cleaned_for_humans() {
    let table = [
        ("plain", "plain"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("a\tb", "a    b"),
        ("10%\r50%\r100%", "100%"),
        ("done\r", "done"),
        ("bell\x07", "bell"),
        ("", ""),
    ];
    for (raw, want) in table {
        assert_eq!(human::plain_text(raw), want, "{raw:?}");
    }
}

#[test]
fn summary_names_steps_bytes_image_and_destination() {
    let lines = human::summary(&human::SummaryFacts {
        steps: 9,
        cached: 7,
        seconds: 12.34,
        bytes: [
            ("pulled", 31 << 20),
            ("written", 0),
            ("loaded", 80 << 20),
            ("pushed", 0),
            ("downloaded", 0),
        ],
        image_id: "sha256:1234",
        dests: &["docker (app:dev)".to_string()],
    });
    assert_eq!(
        lines,
        [
            "9 steps: 2 run, 7 cached in 12.3s",
            "31.0 MiB pulled, 80.0 MiB loaded",
            "image sha256:1234 -> docker (app:dev)",
        ]
    );
}

#[test]
fn sizes_are_iec_as_every_command_prints_them() {
    assert_eq!(human_size(0), "0 B");
    assert_eq!(human_size(1023), "1023 B");
    assert_eq!(human_size(1536), "1.5 KiB");
    assert_eq!(human_size(5 << 20), "5.0 MiB");
    assert_eq!(human_size(3 << 30), "3.0 GiB");
}

/// Steps of parallel stages interleave: each line still names its step, a stopped sibling
/// says CANCELED, and every JSON event says when it happened, in order.
#[test]
fn interleaved_steps_keep_their_numbers_and_json_events_their_times() {
    let interleaved = |rep: &Reporter| {
        for (step, stage) in [(1, "a"), (2, "b")] {
            rep.emit(&Event::Step {
                step,
                total: 2,
                stage,
                text: "RUN work",
                key: "sha256:k",
                cached: false,
            });
        }
        rep.emit(&Event::Output { step: 2, line: "b" });
        rep.emit(&Event::Output { step: 1, line: "a" });
        rep.emit(&Event::Done {
            step: 2,
            seconds: 0.5,
            stages: &[],
        });
        rep.emit(&Event::Canceled { step: 1 });
    };
    let (rep, buf) = reporter(Mode::Plain);
    interleaved(&rep);
    assert_eq!(
        buf.text().lines().collect::<Vec<_>>(),
        [
            "#1 [a 1/2] RUN work",
            "#2 [b 2/2] RUN work",
            "#2 b",
            "#1 a",
            "#2 DONE 0.5s",
            "#1 CANCELED",
        ]
    );
    let (rep, buf) = reporter(Mode::Json);
    interleaved(&rep);
    let events: Vec<serde_json::Value> = buf
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[5]["event"], "canceled");
    assert_eq!(events[5]["step"], 1);
    let times: Vec<f64> = events
        .iter()
        .map(|e| e["time"].as_f64().expect("a time on every event"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// Each event reaches the sink in one write that ends its last line: stderr is unbuffered,
/// so a line written in pieces costs a system call per piece and can be split by another
/// writer to the same pipe.
#[test]
fn each_event_is_one_write_of_whole_lines() {
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Calls {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    for mode in [Mode::Plain, Mode::Json] {
        let calls = Calls::default();
        let rep = Reporter::to_writer(mode, true, Box::new(calls.clone()));
        some_build(&rep);
        let calls = calls.0.lock().unwrap();
        assert!(calls.len() >= 5, "{mode:?}: {}", calls.len());
        for c in calls.iter() {
            assert!(
                c.ends_with(b"\n"),
                "{mode:?}: {:?}",
                String::from_utf8_lossy(c)
            );
        }
    }
}
