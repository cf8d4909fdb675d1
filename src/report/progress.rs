//! Renders executor events: live indicatif bars on a TTY (one line per Kustomization in flight,
//! one per Kustomization still blocked saying what it waits on, finished ones printed above),
//! plain timestamped lines off a TTY (one per state change), or one JSON object per line.
//! Renderers only consume events; they never drive the rollout.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::execute::events::{Event, KsResult, Outcome};
use crate::model::KsId;

/// How to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live bars (stderr is a terminal).
    Tty,
    /// Timestamped lines.
    Plain,
    /// JSON lines on stdout.
    Json,
}

/// Colour helper honouring NO_COLOR / `--no-color`.
#[derive(Debug, Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    /// Green.
    pub fn ok(self, s: &str) -> String {
        self.wrap("32", s)
    }
    /// Red.
    pub fn bad(self, s: &str) -> String {
        self.wrap("31", s)
    }
    /// Yellow.
    pub fn warn(self, s: &str) -> String {
        self.wrap("33", s)
    }
    /// Dim.
    pub fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
}

/// RFC 3339 UTC timestamp with milliseconds, without a date crate.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Human duration: `850ms`, `4.2s`, `3m12s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// `waiting 2/5 ready — Deployment apps/web: 1/3 replicas ready`.
fn waiting_text(ready: usize, total: usize, pending: &[String]) -> String {
    let first = pending
        .first()
        .map(|p| format!(" — {p}"))
        .unwrap_or_default();
    format!("waiting {ready}/{total} ready{first}")
}

/// One-line description of a finished Kustomization.
pub fn finished_line(r: &KsResult, paint: Paint) -> String {
    let c = &r.objects;
    let counts = format!(
        "{} created, {} configured, {} unchanged",
        c.created, c.configured, c.unchanged
    );
    let tries = if r.attempts > 1 {
        format!(" after {} attempts", r.attempts)
    } else {
        String::new()
    };
    match &r.outcome {
        Outcome::Unchanged => format!(
            "{} {} unchanged: same build, still healthy",
            paint.ok("✓"),
            r.id
        ),
        Outcome::Ready => format!(
            "{} {} ready in {}{tries} ({counts})",
            paint.ok("✓"),
            r.id,
            human(r.duration)
        ),
        Outcome::Failed { reason, .. } => format!(
            "{} {} failed after {}{tries}: {reason}",
            paint.bad("✗"),
            r.id,
            human(r.duration)
        ),
        Outcome::Skipped { blocked_by } => format!(
            "{} {} skipped: blocked by {}",
            paint.warn("-"),
            r.id,
            blocked_by.join(", ")
        ),
        Outcome::Suspended => format!("{} {} suspended: not applied", paint.dim("-"), r.id),
        Outcome::NotStarted { reason } => {
            format!("{} {} not started: {reason}", paint.warn("-"), r.id)
        }
        Outcome::Excluded { reason, invalid } => {
            let mark = if *invalid {
                paint.bad("✗")
            } else {
                paint.dim("-")
            };
            format!("{mark} {} excluded: {reason}", r.id)
        }
    }
}

/// Consumes events until the channel closes, rendering them in `mode`.
pub async fn render(mode: Mode, paint: Paint, mut rx: UnboundedReceiver<Event>) {
    match mode {
        Mode::Json => {
            while let Some(e) = rx.recv().await {
                if let Ok(s) = serde_json::to_string(&e) {
                    println!("{s}");
                }
            }
        }
        Mode::Plain => {
            while let Some(e) = rx.recv().await {
                if let Some(line) = plain_line(&e, paint) {
                    eprintln!("{} {line}", timestamp(SystemTime::now()));
                }
            }
        }
        Mode::Tty => render_tty(paint, rx).await,
    }
}

fn plain_line(e: &Event, paint: Paint) -> Option<String> {
    Some(match e {
        Event::RolloutStarted {
            kustomizations,
            objects,
        } => format!("rollout of {kustomizations} Kustomizations ({objects} objects) started"),
        Event::Started {
            id,
            objects,
            timeout_seconds,
        } => format!(
            "{id} applying {objects} objects (health timeout {}s)",
            timeout_seconds
        ),
        Event::Applied { .. } | Event::ObjectReady { .. } | Event::HealthPassed { .. } => {
            return None;
        }
        Event::Retrying { .. } => return retrying_line(e, paint),
        Event::AllApplied { id } => format!("{id} applied; checking health"),
        Event::Waiting {
            id,
            ready,
            total,
            pending,
        } => format!("{id} {}", waiting_text(*ready, *total, pending)),
        Event::Blocked { id, waiting_on } => format!("{id} waiting on {}", waiting_on.join(", ")),
        Event::Finished(r) => finished_line(r, paint),
        Event::Interrupted => "interrupted: no new Kustomization or object will start".into(),
    })
}

/// `retrying X (attempt N, next in Ns): reason`.
fn retrying_line(e: &Event, paint: Paint) -> Option<String> {
    let Event::Retrying {
        id,
        attempt,
        delay_seconds,
        reason,
        ..
    } = e
    else {
        return None;
    };
    Some(format!(
        "{} retrying {id} (attempt {attempt}, next in {}): {reason}",
        paint.warn("↻"),
        human(Duration::from_secs_f64(*delay_seconds))
    ))
}

struct Line {
    bar: ProgressBar,
    started: Instant,
    timeout: Duration,
    total: usize,
    applied: usize,
}

async fn render_tty(paint: Paint, mut rx: UnboundedReceiver<Event>) {
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut lines: BTreeMap<KsId, Line> = BTreeMap::new();
    let mut blocked: BTreeMap<KsId, (ProgressBar, Vec<String>, Instant)> = BTreeMap::new();
    let mut waiting: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let e = tokio::select! {
            e = rx.recv() => e,
            _ = tick.tick() => {
                refresh(&lines, &blocked, &waiting);
                continue;
            }
        };
        let Some(e) = e else { break };
        match &e {
            Event::Started {
                id,
                objects,
                timeout_seconds,
            } => {
                if let Some((b, _, _)) = blocked.remove(id) {
                    b.finish_and_clear();
                }
                waiting.remove(&id.to_string());
                let bar = mp.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                lines.insert(
                    id.clone(),
                    Line {
                        bar,
                        started: Instant::now(),
                        timeout: Duration::from_secs(*timeout_seconds),
                        total: *objects,
                        applied: 0,
                    },
                );
            }
            Event::Applied { id, .. } => {
                if let Some(l) = lines.get_mut(id) {
                    l.applied += 1;
                }
            }
            Event::Waiting {
                id,
                ready,
                total,
                pending,
            } => {
                waiting.insert(id.to_string(), waiting_text(*ready, *total, pending));
            }
            Event::Blocked { id, waiting_on } => {
                let (bar, since) = match blocked.remove(id) {
                    Some((b, _, since)) => (b, since),
                    None => {
                        let b = mp.add(ProgressBar::new_spinner());
                        b.set_style(style.clone());
                        (b, Instant::now())
                    }
                };
                blocked.insert(id.clone(), (bar, waiting_on.clone(), since));
            }
            Event::Finished(r) => {
                if let Some(l) = lines.remove(&r.id) {
                    l.bar.finish_and_clear();
                }
                if let Some((b, _, _)) = blocked.remove(&r.id) {
                    b.finish_and_clear();
                }
                waiting.remove(&r.id.to_string());
                let _ = mp.println(finished_line(r, paint));
            }
            Event::Retrying {
                id,
                attempt,
                delay_seconds,
                ..
            } => {
                if let Some(l) = lines.remove(id) {
                    l.bar.finish_and_clear();
                }
                // What a dependent's blocked line shows about it.
                waiting.insert(
                    id.to_string(),
                    format!(
                        "retrying (attempt {attempt} in {})",
                        human(Duration::from_secs_f64(*delay_seconds))
                    ),
                );
                if let Some(line) = retrying_line(&e, paint) {
                    let _ = mp.println(line);
                }
            }
            Event::Interrupted => {
                let _ = mp
                    .println(paint.warn("interrupted: no new Kustomization or object will start"));
            }
            _ => {}
        }
        refresh(&lines, &blocked, &waiting);
    }
    let _ = mp.clear();
    let _ = std::io::stderr().flush();
}

fn refresh(
    lines: &BTreeMap<KsId, Line>,
    blocked: &BTreeMap<KsId, (ProgressBar, Vec<String>, Instant)>,
    waiting: &BTreeMap<String, String>,
) {
    for (id, l) in lines {
        let phase = waiting
            .get(&id.to_string())
            .cloned()
            .unwrap_or_else(|| format!("applying {}/{}", l.applied, l.total));
        l.bar.set_message(format!(
            "{id}: {phase} ({} of {})",
            human(l.started.elapsed()),
            human(l.timeout)
        ));
        l.bar.tick();
    }
    for (id, (bar, on, since)) in blocked {
        let detail = on
            .iter()
            .filter_map(|d| {
                waiting
                    .get(d.trim_end_matches(" (parent)"))
                    .map(|w| format!("{d}: {w}"))
            })
            .next()
            .unwrap_or_else(|| on.join(", "));
        bar.set_message(format!(
            "{id}: waiting on {detail}, {}",
            human(since.elapsed())
        ));
        bar.tick();
    }
}
