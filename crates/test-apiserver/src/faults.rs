//! Fault injection: which requests a fault matches, when it triggers (Nth, first K, a seeded
//! fraction, always) and what it does (error status, dropped connection, added latency).

use std::time::Duration;

use crate::log::Verb;

/// Which requests a fault applies to. `None` fields match anything.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    /// HTTP method, e.g. `PATCH` (case-insensitive).
    pub method: Option<String>,
    /// Kubernetes verb.
    pub verb: Option<Verb>,
    /// Resource plural (`deployments`) or kind (`Deployment`), case-insensitive.
    pub resource: Option<String>,
    /// API group (`apps`, `` for core).
    pub group: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Substring of the object name.
    pub name_contains: Option<String>,
    /// Only dry-run requests (`Some(true)`) or only real ones (`Some(false)`).
    pub dry_run: Option<bool>,
    /// Substring of the request path.
    pub path_contains: Option<String>,
}

impl Matcher {
    /// Match everything.
    pub fn any() -> Matcher {
        Matcher::default()
    }
    /// Match one verb.
    pub fn verb(verb: Verb) -> Matcher {
        Matcher {
            verb: Some(verb),
            ..Matcher::default()
        }
    }
    /// Also require this resource plural or kind.
    pub fn resource(mut self, r: &str) -> Matcher {
        self.resource = Some(r.to_string());
        self
    }
    /// Also require this namespace.
    pub fn namespace(mut self, ns: &str) -> Matcher {
        self.namespace = Some(ns.to_string());
        self
    }
    /// Also require the name to contain this.
    pub fn name_contains(mut self, s: &str) -> Matcher {
        self.name_contains = Some(s.to_string());
        self
    }
    /// Also require dry-run (true) or not (false).
    pub fn dry_run(mut self, d: bool) -> Matcher {
        self.dry_run = Some(d);
        self
    }
    /// Also require this HTTP method.
    pub fn method(mut self, m: &str) -> Matcher {
        self.method = Some(m.to_string());
        self
    }

    pub(crate) fn matches(&self, r: &crate::log::RequestLog) -> bool {
        let eq = |a: &Option<String>, b: &str| a.as_ref().is_none_or(|a| a.eq_ignore_ascii_case(b));
        eq(&self.method, &r.method)
            && self.verb.is_none_or(|v| v == r.verb)
            && self.resource.as_ref().is_none_or(|x| {
                x.eq_ignore_ascii_case(&r.resource) || x.eq_ignore_ascii_case(&r.kind)
            })
            && self.group.as_ref().is_none_or(|g| g == &r.group)
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| r.namespace.as_deref() == Some(n.as_str()))
            && self
                .name_contains
                .as_ref()
                .is_none_or(|n| r.name.as_deref().is_some_and(|x| x.contains(n.as_str())))
            && self.dry_run.is_none_or(|d| d == r.dry_run)
            && self
                .path_contains
                .as_ref()
                .is_none_or(|p| r.path.contains(p.as_str()))
    }
}

/// When a matching request triggers the fault.
#[derive(Clone, Debug)]
pub enum Trigger {
    /// Every matching request.
    Always,
    /// Only the Nth matching request (1-based).
    Nth(u64),
    /// The first K matching requests.
    First(u64),
    /// Each matching request with this probability, from a deterministic PRNG with this seed.
    Fraction {
        /// Probability in 0..=1.
        p: f64,
        /// PRNG seed.
        seed: u64,
    },
}

/// What a triggered fault does.
#[derive(Clone, Debug)]
pub enum FaultAction {
    /// Answer with this HTTP status and a `Status` body (429 carries `Retry-After`).
    Status {
        /// HTTP status code (429, 500, 502, 503, 504, ...).
        code: u16,
        /// `Retry-After` seconds (defaults to 1 for 429).
        retry_after: Option<u64>,
    },
    /// Close the TCP connection without any response.
    Drop,
    /// Wait this long, then handle the request normally.
    Latency(Duration),
}

/// A fault to inject.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Which requests.
    pub matcher: Matcher,
    /// When.
    pub trigger: Trigger,
    /// What.
    pub action: FaultAction,
}

impl Fault {
    /// A fault that triggers on every matching request.
    pub fn new(matcher: Matcher, action: FaultAction) -> Fault {
        Fault {
            matcher,
            trigger: Trigger::Always,
            action,
        }
    }
    /// Respond with `code` (and `Retry-After: 1` for 429).
    pub fn status(matcher: Matcher, code: u16) -> Fault {
        Fault::new(
            matcher,
            FaultAction::Status {
                code,
                retry_after: None,
            },
        )
    }
    /// Drop the connection.
    pub fn drop_connection(matcher: Matcher) -> Fault {
        Fault::new(matcher, FaultAction::Drop)
    }
    /// Add latency.
    pub fn latency(matcher: Matcher, d: Duration) -> Fault {
        Fault::new(matcher, FaultAction::Latency(d))
    }
    /// Only the Nth matching request (1-based).
    pub fn nth(mut self, n: u64) -> Fault {
        self.trigger = Trigger::Nth(n);
        self
    }
    /// The first K matching requests.
    pub fn first(mut self, k: u64) -> Fault {
        self.trigger = Trigger::First(k);
        self
    }
    /// A seeded fraction of matching requests.
    pub fn fraction(mut self, p: f64, seed: u64) -> Fault {
        self.trigger = Trigger::Fraction { p, seed };
        self
    }
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// A fault rule as the standalone server's `--fault` takes it: comma-separated `key=value`
    /// pairs (and the bare word `drop`).
    ///
    /// - which requests: `method`, `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`,
    ///   `apply`, `delete`, `deletecollection`, `nonresource`), `resource` (plural or kind),
    ///   `group`, `namespace`, `name` (substring), `path` (substring), `dry-run` (`true`/`false`);
    /// - what: `status=CODE` (with `retry-after=SECONDS`), `drop`, or `latency=DURATION`;
    /// - when (default every time): `nth=N`, `first=K`, or `fraction=P` (with `seed=S`).
    ///
    /// E.g. `verb=apply,name=web,status=503,retry-after=2,first=3` or `path=/version,drop,nth=1`.
    fn from_str(rule: &str) -> Result<Fault, String> {
        let mut m = Matcher::any();
        let mut action = None;
        let mut retry_after = None;
        let mut trigger = Trigger::Always;
        let mut seed = 1;
        for part in rule.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let num = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{what}={v}: expected a whole number"))
            };
            match k {
                "method" => m.method = Some(v.to_uppercase()),
                "verb" => {
                    m.verb = Some(match v {
                        "get" => Verb::Get,
                        "list" => Verb::List,
                        "watch" => Verb::Watch,
                        "create" => Verb::Create,
                        "update" => Verb::Update,
                        "patch" => Verb::Patch,
                        "apply" => Verb::Apply,
                        "delete" => Verb::Delete,
                        "deletecollection" => Verb::DeleteCollection,
                        "nonresource" => Verb::NonResource,
                        _ => return Err(format!("verb={v}: unknown verb")),
                    })
                }
                "resource" => m.resource = Some(v.into()),
                "group" => m.group = Some(v.into()),
                "namespace" => m.namespace = Some(v.into()),
                "name" => m.name_contains = Some(v.into()),
                "path" => m.path_contains = Some(v.into()),
                "dry-run" => {
                    m.dry_run = Some(
                        v.parse()
                            .map_err(|_| format!("dry-run={v}: expected true or false"))?,
                    )
                }
                "status" => action = Some(("status", num("status")?)),
                "retry-after" => retry_after = Some(num("retry-after")?),
                "drop" => action = Some(("drop", 0)),
                "latency" => {
                    let d = crate::controllers::parse_duration(v)
                        .ok_or_else(|| format!("latency={v}: expected a duration such as 2s"))?;
                    action = Some(("latency", d.as_millis() as u64))
                }
                "nth" => trigger = Trigger::Nth(num("nth")?),
                "first" => trigger = Trigger::First(num("first")?),
                "fraction" => {
                    let p: f64 = v
                        .parse()
                        .map_err(|_| format!("fraction={v}: expected a number in 0..1"))?;
                    trigger = Trigger::Fraction { p, seed: 0 }
                }
                "seed" => seed = num("seed")?,
                _ => return Err(format!("{part}: unknown key {k}")),
            }
        }
        if let Trigger::Fraction { p, .. } = trigger {
            trigger = Trigger::Fraction { p, seed };
        }
        let action = match action {
            Some(("status", code)) => FaultAction::Status {
                code: u16::try_from(code)
                    .map_err(|_| format!("status={code}: not an HTTP code"))?,
                retry_after,
            },
            Some(("drop", _)) => FaultAction::Drop,
            Some((_, ms)) => FaultAction::Latency(Duration::from_millis(ms)),
            None => {
                return Err(format!(
                    "{rule}: says no action (status=CODE, drop or latency=DURATION)"
                ));
            }
        };
        Ok(Fault {
            matcher: m,
            trigger,
            action,
        })
    }
}

/// Handle of an injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultId(pub u64);

pub(crate) struct Active {
    pub id: FaultId,
    pub fault: Fault,
    pub matched: u64,
    pub triggered: u64,
    pub rng: u64,
}

/// All injected faults.
#[derive(Default)]
pub(crate) struct Faults {
    pub next: u64,
    pub active: Vec<Active>,
}

impl Faults {
    pub fn inject(&mut self, fault: Fault) -> FaultId {
        self.next += 1;
        let id = FaultId(self.next);
        let rng = match fault.trigger {
            Trigger::Fraction { seed, .. } => seed ^ 0x2545_f491_4f6c_dd1d,
            _ => 0,
        };
        self.active.push(Active {
            id,
            fault,
            matched: 0,
            triggered: 0,
            rng,
        });
        id
    }

    /// Actions triggered by this request, in injection order.
    pub fn check(&mut self, r: &crate::log::RequestLog) -> Vec<FaultAction> {
        let mut out = vec![];
        for a in self.active.iter_mut() {
            if !a.fault.matcher.matches(r) {
                continue;
            }
            a.matched += 1;
            let fire = match a.fault.trigger {
                Trigger::Always => true,
                Trigger::Nth(n) => a.matched == n,
                Trigger::First(k) => a.matched <= k,
                Trigger::Fraction { p, .. } => {
                    // xorshift64*
                    let mut x = a.rng.max(1);
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    a.rng = x;
                    let r =
                        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
                    r < p
                }
            };
            if fire {
                a.triggered += 1;
                out.push(a.fault.action.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_into_faults() {
        let f: Fault = "verb=apply,name=web,status=503,retry-after=2,first=3"
            .parse()
            .unwrap();
        assert_eq!(f.matcher.verb, Some(Verb::Apply));
        assert_eq!(f.matcher.name_contains.as_deref(), Some("web"));
        assert!(matches!(
            f.action,
            FaultAction::Status {
                code: 503,
                retry_after: Some(2)
            }
        ));
        assert!(matches!(f.trigger, Trigger::First(3)));
        let f: Fault = "path=/version,drop,nth=1".parse().unwrap();
        assert!(matches!(f.action, FaultAction::Drop));
        assert!(matches!(f.trigger, Trigger::Nth(1)));
        let f: Fault = "dry-run=true,latency=1h,fraction=0.5,seed=7"
            .parse()
            .unwrap();
        assert_eq!(f.matcher.dry_run, Some(true));
        assert!(matches!(f.action, FaultAction::Latency(d) if d == Duration::from_secs(3600)));
        assert!(matches!(f.trigger, Trigger::Fraction { seed: 7, .. }));
        for bad in [
            "verb=apply",
            "verb=poke,drop",
            "status=abc",
            "colour=red,drop",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }
}
