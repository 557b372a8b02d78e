//! The log's bookkeeping on its own, and the reader over real pipes.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;
use std::io::Write;
use std::sync::Mutex;
use tracing::field::{Field, Visit};

/// One captured event: its level and fields as text.
#[derive(Debug, Clone)]
struct Seen {
    level: tracing::Level,
    fields: std::collections::BTreeMap<String, String>,
}

impl Seen {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut std::collections::BTreeMap<String, String>);
impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        m.target() == TARGET
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = std::collections::BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn captured(f: impl FnOnce()) -> Vec<Seen> {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), f);
    capture.0.lock().unwrap().clone()
}

fn lines_of(seen: &[Seen]) -> Vec<(String, String, String)> {
    seen.iter()
        .filter(|s| s.level == tracing::Level::INFO)
        .map(|s| {
            (
                s.get("stream").to_owned(),
                s.get("message").to_owned(),
                s.get("truncated").to_owned(),
            )
        })
        .collect()
}

#[test]
fn lines_are_split_per_stream_escaped_and_cut() {
    let seen = captured(|| {
        let mut l = Lines::new("p".into(), 1 << 20);
        l.feed(Stream::Stdout, b"one\ntw");
        l.feed(Stream::Stderr, b"err \x1b[2J\n");
        l.feed(Stream::Stdout, b"o\n\n");
        l.feed(Stream::Stdout, &vec![b'x'; LINE_CAP + 10]);
        l.feed(Stream::Stdout, b"yyy\nlast");
        l.flush(Stream::Stdout);
        l.close_window();
    });
    let got = lines_of(&seen);
    let cut = "x".repeat(LINE_CAP);
    let want: Vec<(&str, &str, &str)> = vec![
        ("stdout", "one", "false"),
        ("stderr", r"err \u{1b}[2J", "false"),
        ("stdout", "two", "false"),
        ("stdout", &cut, "true"),
        ("stdout", "last", "false"),
    ];
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(a, b, c)| (a.into(), b.into(), c.into()))
        .collect();
    assert_eq!(got, want);
    // A long line is cut, not "dropped past the limit": no warning.
    assert!(seen.iter().all(|s| s.level == tracing::Level::INFO));
    assert!(seen.iter().all(|s| s.get("plugin") == "p"));
}

#[test]
fn a_window_surfaces_at_most_the_limit_and_warns_once_with_the_count() {
    let limit = 1000;
    let line = [b'a'; 99];
    let seen = captured(|| {
        let mut l = Lines::new("p".into(), limit);
        for _ in 0..100 {
            l.feed(Stream::Stdout, &line);
            l.feed(Stream::Stdout, b"\n");
        }
        l.close_window();
        // The next window surfaces again.
        l.feed(Stream::Stderr, b"again\n");
        l.close_window();
    });
    let surfaced: usize = seen
        .iter()
        .filter(|s| s.level == tracing::Level::INFO && s.get("stream") == "stdout")
        .map(|s| s.get("message").len() + 1)
        .sum();
    assert_eq!(surfaced, limit);
    let warnings: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "{seen:?}");
    assert_eq!(warnings[0].get("dropped"), (100 * 100 - limit).to_string());
    assert_eq!(warnings[0].get("limit"), limit.to_string());
    assert_eq!(
        lines_of(&seen).last().unwrap(),
        &("stderr".into(), "again".into(), "false".into())
    );
}

#[test]
fn the_reader_delivers_to_the_loading_threads_subscriber_and_ends_on_eof() {
    let seen = captured(|| {
        let (log, pipes) = PluginLog::start("p", 1 << 20).unwrap();
        let LogPipes { stdout, stderr } = pipes;
        let (mut out, mut err) = (stdout, stderr);
        out.write_all(b"hello\npartial").unwrap();
        err.write_all(b"oops\n").unwrap();
        drop((out, err));
        drop(log);
    });
    let mut got = lines_of(&seen);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("stderr".into(), "oops".into(), "false".into()),
            ("stdout".into(), "hello".into(), "false".into()),
            ("stdout".into(), "partial".into(), "false".into()),
        ]
    );
}

#[test]
fn a_window_ends_exactly_where_the_call_was_sent_however_late_the_reader_runs() {
    let seen = captured(|| {
        let (log, pipes) = PluginLog::start("p", 10).unwrap();
        let (mut out, mut err) = (pipes.stdout, pipes.stderr);
        // The load's window: 10 bytes fit, 5 more are dropped.
        out.write_all(b"aaaaaaaaa\nbbbb\n").unwrap();
        err.write_all(b"e\n").unwrap();
        log.new_window();
        // The call's window, whether or not the reader has read the above yet.
        out.write_all(b"cccc\n").unwrap();
        err.write_all(b"dd\n").unwrap();
        drop((out, err));
        drop(log);
    });
    let mut got = lines_of(&seen);
    got.sort();
    let want: Vec<(String, String, String)> = [
        ("stderr", "dd"),
        ("stdout", "aaaaaaaaa"),
        ("stdout", "cccc"),
    ]
    .into_iter()
    .map(|(a, b)| (a.into(), b.into(), "false".into()))
    .collect();
    assert_eq!(got, want);
    let warnings: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "{seen:?}");
    assert_eq!(warnings[0].get("dropped"), "7");
}

/// Calls that print nothing cost the reader nothing (no boundary, no wake-up), but a window
/// the worker wrote in still ends where the next call was sent, however far the reader got:
/// here it has read all of the load's output (the pauses give it time; the outcome is the
/// same if it has not) before the calls are sent, so a `new_window` that skipped whenever
/// the pipes were empty would merge the two windows into one warning of 8.
#[test]
fn calls_that_print_nothing_keep_every_window_boundary() {
    let seen = captured(|| {
        let (log, pipes) = PluginLog::start("p", 10).unwrap();
        let mut out = pipes.stdout;
        out.write_all(b"aaaaaaaaa\nbbbb\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        log.new_window();
        std::thread::sleep(std::time::Duration::from_millis(50));
        for _ in 0..3 {
            log.new_window();
        }
        out.write_all(b"ccccccccc\ndd\n").unwrap();
        drop((out, pipes.stderr));
        drop(log);
    });
    let got: Vec<String> = lines_of(&seen).into_iter().map(|(_, l, _)| l).collect();
    assert_eq!(got, ["aaaaaaaaa", "ccccccccc"]);
    let dropped: Vec<&str> = seen
        .iter()
        .filter(|s| s.level == tracing::Level::WARN)
        .map(|s| s.get("dropped"))
        .collect();
    assert_eq!(dropped, ["5", "3"], "{seen:?}");
}

#[test]
fn a_writer_that_keeps_the_pipe_open_cannot_hold_the_host() {
    let (log, pipes) = PluginLog::start("p", 1 << 20).unwrap();
    // Another process kept a copy of the write end and never closes it: ending the log
    // must return anyway (a plain join would wait for end of file forever).
    let (ended, wait) = mpsc::channel();
    std::thread::spawn(move || {
        drop(log);
        let _ = ended.send(());
    });
    let result = wait.recv_timeout(Duration::from_secs(10));
    assert_eq!(result, Ok(()), "ending the log waited on the writer");
    drop(pipes);
}

#[test]
fn a_flood_does_not_block_the_writer_and_is_bounded() {
    let seen = captured(|| {
        let (log, pipes) = PluginLog::start("p", 4096).unwrap();
        let mut out = pipes.stdout;
        let line = [b'z'; 127];
        let started = Instant::now();
        // 8 MiB: far more than a pipe holds, so the reader must drain as it goes.
        for _ in 0..(8 << 20) / 128 {
            out.write_all(&line).unwrap();
            out.write_all(b"\n").unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(out);
        drop(pipes.stderr);
        drop(log);
    });
    let surfaced: usize = seen
        .iter()
        .filter(|s| s.level == tracing::Level::INFO)
        .map(|s| s.get("message").len() + 1)
        .sum();
    assert!(surfaced <= 4096, "{surfaced}");
    let warnings = seen
        .iter()
        .filter(|s| s.level == tracing::Level::WARN)
        .count();
    assert_eq!(warnings, 1);
}
