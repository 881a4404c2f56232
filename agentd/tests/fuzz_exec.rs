//! Fuzz target for the command whitelist's parameter checks: arbitrary JSON values against
//! every kind of parameter slot, in every place an argument template can put them. Rendering
//! never panics; an accepted value matches its slot (whole pattern, length, range, enum,
//! unit-name rules) as checked here independently, and whatever is accepted or refused agrees
//! with those rules; argv has exactly one element per template argument, each the template
//! with the values put in, so a value can never split into two arguments or start an option.
//!
//! `PROPTEST_CASES` sets the number of cases; `scripts/fuzz` runs it long.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agentd::exec::{Command, CommandSpec};
use axon_shared::ParamSchema;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;
use regex::Regex;
use serde_json::{Value, json};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Relative to the crate directory, where `cargo test` runs; committed, so a case
        // that once failed replays on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_exec.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// Patterns a host owner might write, including ones whose meaning depends on anchoring.
const PATTERNS: &[&str] = &[
    "[a-z0-9._-]+",
    "[0-9]{1,5}",
    "a|b",
    "start|stop|restart",
    ".*",
    "[^/]+",
    "v[0-9]+(\\.[0-9]+)*",
    "\\S+",
    "\\w+",
    "(?i)abc",
    "a*",
    "(?m)x$",
    "[[:alpha:]]+ [0-9]",
    "[a-z]+/[a-z]+",
];

/// Values an owner might list for an enum slot, awkward ones included.
const ENUM_VALUES: &[&str] = &["start", "stop", "-rf", "a b", "x;y", "", "é", "{p0}"];

const FIXED: &[&str] = &["--", "-v", "status", "--no-pager", "", "a b"];

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "mount",
    "automount",
    "path",
    "slice",
    "scope",
    "device",
    "swap",
];

fn schema() -> impl Strategy<Value = ParamSchema> {
    let enum_value = select(ENUM_VALUES);
    prop_oneof![
        prop::collection::vec(enum_value, 1..4).prop_map(|v| ParamSchema::Enum {
            values: v.into_iter().map(str::to_owned).collect()
        }),
        (
            prop_oneof![Just(i64::MIN), -20i64..20, Just(0)],
            prop_oneof![Just(i64::MAX), -20i64..40]
        )
            .prop_map(|(a, b)| ParamSchema::Integer {
                min: a.min(b),
                max: a.max(b)
            }),
        (select(PATTERNS), prop_oneof![1usize..16, Just(4096)]).prop_map(|(p, max_len)| {
            ParamSchema::String {
                pattern: p.to_owned(),
                max_len,
            }
        }),
        Just(ParamSchema::Unit),
    ]
}

/// How one template argument uses the parameters.
#[derive(Debug, Clone)]
enum Arg {
    Fixed(&'static str),
    /// Text, a parameter, text, optionally a second parameter.
    Uses(&'static str, usize, &'static str, Option<usize>),
}

fn render_template(arg: &Arg) -> String {
    match arg {
        Arg::Fixed(t) => (*t).to_owned(),
        Arg::Uses(pre, p, post, second) => {
            let mut s = format!("{pre}{{p{p}}}{post}");
            if let Some(q) = second {
                s.push_str(&format!("{{p{q}}}"));
            }
            s
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    schemas: Vec<ParamSchema>,
    args: Vec<Arg>,
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(schema(), 1..4).prop_flat_map(|schemas| {
        let n = schemas.len();
        let pre = select(PRE);
        let post = select(POST);
        let uses = (pre, 0..n, post, prop::option::of(0..n))
            .prop_map(|(a, p, b, q)| Arg::Uses(a, p, b, q));
        let arg = prop_oneof![select(FIXED).prop_map(Arg::Fixed), uses];
        (Just(schemas), prop::collection::vec(arg, 0..5))
            .prop_map(move |(schemas, args)| every_parameter_used(schemas, args))
    })
}

/// Text before and after a parameter in an argument.
const PRE: &[&str] = &["", "", "--lines=", "x", "-"];
const POST: &[&str] = &["", "", "y", "/"];

/// Every parameter must be used by some argument, or the entry is refused.
fn every_parameter_used(schemas: Vec<ParamSchema>, mut args: Vec<Arg>) -> Case {
    for p in 0..schemas.len() {
        if !args
            .iter()
            .any(|a| matches!(a, Arg::Uses(_, q, _, r) if *q == p || *r == Some(p)))
        {
            args.push(Arg::Uses("", p, "", None));
        }
    }
    Case { schemas, args }
}

fn spec(case: &Case) -> CommandSpec {
    CommandSpec {
        name: "fuzz".into(),
        description: String::new(),
        binary: PathBuf::from("/bin/true"),
        args: case.args.iter().map(render_template).collect(),
        params: case
            .schemas
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("p{i}"), s.clone()))
            .collect(),
        timeout: None,
        output_cap: None,
        run_as: None,
        working_dir: None,
        env: Vec::new(),
    }
}

/// Values that may pass a slot of this schema, and many that must not.
fn value_for(schema: &ParamSchema) -> BoxedStrategy<Value> {
    let hostile = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!(5.0)),
        Just(json!("5")),
        Just(json!([1])),
        Just(json!({"a": 1})),
        select(
            &[
                "",
                "-",
                "--",
                "-rf",
                "--help",
                " -x",
                "a b",
                "a\tb",
                "a\nb",
                "a\0b",
                "\u{1b}[2J",
                "$(id)",
                "`id`",
                "x;id",
                "{p1}",
                "é",
                "\u{202e}",
                "a\u{2028}b",
                "\u{85}",
                "start\n",
                "x.service\n",
                "-x.service",
                "../x.service",
                "a b.service",
                "a@b@c.service",
                "@a.service",
                ".service",
                "a.bogus",
                "a.service.",
            ][..]
        )
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::from("a".repeat(4097))),
    ];
    let fitting: BoxedStrategy<Value> = match schema {
        ParamSchema::Enum { values } => select(values.clone()).prop_map(Value::from).boxed(),
        ParamSchema::Integer { min, max } => prop_oneof![
            (*min..=*max).prop_map(Value::from),
            Just(Value::from(*min)),
            Just(Value::from(*max)),
            Just(Value::from(min.saturating_sub(1))),
            Just(Value::from(max.saturating_add(1))),
        ]
        .boxed(),
        ParamSchema::String { pattern, .. } => proptest::string::string_regex(pattern)
            .map(|s| s.prop_map(Value::from).boxed())
            .unwrap_or_else(|_| Just(Value::Null).boxed()),
        ParamSchema::Unit => concat!(
            "[A-Za-z0-9:_.\\\\-]{1,12}(@[A-Za-z0-9:_.\\\\-]{0,8})?",
            "\\.(service|socket|timer|mount|swap|bogus)"
        )
        .prop_map(Value::from)
        .boxed(),
    };
    prop_oneof![3 => fitting, 2 => hostile].boxed()
}

fn case_and_values() -> impl Strategy<Value = (Case, BTreeMap<String, Value>)> {
    case().prop_flat_map(|case| {
        let slots: Vec<_> = case.schemas.iter().map(value_for).collect();
        let extra = prop::option::weighted(0.1, ("[a-z0-9]{1,3}", any::<i64>()));
        let keep = prop::collection::vec(prop::bool::weighted(0.95), 4);
        (Just(case), slots, keep, extra).prop_map(|(case, values, keep, extra)| {
            let mut map: BTreeMap<String, Value> = values
                .into_iter()
                .enumerate()
                // Now and then a parameter is missing.
                .filter(|(i, _)| keep.get(*i).copied().unwrap_or(true))
                .map(|(i, v)| (format!("p{i}"), v))
                .collect();
            if let Some((k, v)) = extra {
                map.insert(k, Value::from(v));
            }
            (case, map)
        })
    })
}

/// systemd's unit name rules as documented: at most 255 bytes of `[A-Za-z0-9:_.\-]` with at
/// most one `@`, not starting with `-` or `@`, then a known `.type`.
fn unit_ok(v: &str) -> bool {
    let Some((stem, suffix)) = v.rsplit_once('.') else {
        return false;
    };
    v.len() <= 255
        && UNIT_SUFFIXES.contains(&suffix)
        && !stem.is_empty()
        && !stem.starts_with(['-', '@'])
        && stem.chars().filter(|&c| c == '@').count() <= 1
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.\\-@".contains(c))
}

/// The text a value stands for in argv, if the slot accepts it.
fn accepted_text(schema: &ParamSchema, value: &Value) -> Option<String> {
    match schema {
        ParamSchema::Enum { values } => {
            let v = value.as_str()?;
            values.iter().any(|a| a == v).then(|| v.to_owned())
        }
        ParamSchema::Integer { min, max } => {
            let v = value.as_i64()?;
            (*min <= v && v <= *max).then(|| v.to_string())
        }
        ParamSchema::String { pattern, max_len } => {
            let v = value.as_str()?;
            let whole = Regex::new(&format!(r"\A(?:{pattern})\z")).ok()?;
            let fine = !v.is_empty()
                && v.len() <= *max_len
                && !v.starts_with('-')
                && !v.chars().any(char::is_control)
                && whole.is_match(v);
            fine.then(|| v.to_owned())
        }
        ParamSchema::Unit => {
            let v = value.as_str()?;
            (unit_ok(v) && !v.chars().any(char::is_control)).then(|| v.to_owned())
        }
    }
}

fn expected_argv(case: &Case, texts: &[String]) -> Vec<String> {
    case.args
        .iter()
        .map(|arg| match arg {
            Arg::Fixed(t) => (*t).to_owned(),
            Arg::Uses(pre, p, post, q) => {
                let mut s = format!("{pre}{}{post}", texts[*p]);
                if let Some(q) = q {
                    s.push_str(&texts[*q]);
                }
                s
            }
        })
        .collect()
}

fn etc() -> &'static Path {
    Path::new("/etc")
}

fn check_render((case, values): (Case, BTreeMap<String, Value>)) -> Result<(), TestCaseError> {
    let command = Command::from_spec(spec(&case), etc())
        .map_err(|e| TestCaseError::fail(format!("valid spec refused: {e}")))?;
    let result = command.render(&values);
    let names: Vec<String> = (0..case.schemas.len()).map(|i| format!("p{i}")).collect();
    let only_params = values.keys().all(|k| names.contains(k));
    let texts: Option<Vec<String>> = case
        .schemas
        .iter()
        .zip(&names)
        .map(|(s, n)| values.get(n).and_then(|v| accepted_text(s, v)))
        .collect();
    match (result, texts) {
        (Ok(argv), Some(texts)) if only_params => {
            prop_assert_eq!(argv.len(), case.args.len());
            prop_assert_eq!(&argv, &expected_argv(&case, &texts));
            // Only a negative integer or an enum value the owner listed may start an
            // argument with '-' where the template does not.
            for (arg, rendered) in case.args.iter().zip(&argv) {
                if let Arg::Uses("", p, _, _) = arg
                    && rendered.starts_with('-')
                {
                    let allowed = matches!(
                        &case.schemas[*p],
                        ParamSchema::Integer { .. } | ParamSchema::Enum { .. }
                    );
                    prop_assert!(allowed, "{rendered:?} starts an option");
                }
            }
        }
        (Err(_), None) => {}
        (Err(_), Some(_)) if !only_params => {}
        (Ok(argv), _) => prop_assert!(false, "accepted {values:?} as {argv:?}"),
        (Err(e), Some(_)) => prop_assert!(false, "refused {values:?}: {e}"),
    }
    Ok(())
}

fn specs() -> impl Strategy<Value = (Vec<String>, String, usize, String)> {
    (
        prop::collection::vec("[a-z{}0-9=-]{0,8}|.{0,6}", 0..4),
        prop_oneof![
            select(PATTERNS).prop_map(str::to_owned),
            "[a-z.*+?()|\\[\\]^$\\\\-]{0,10}",
        ],
        0usize..5000,
        "[a-z.()|-]{0,10}",
    )
}

/// Any template and pattern text: loading never panics, and a pattern is used only as a
/// whole, anchored regular expression.
fn check_specs(
    (args, pattern, max_len, value): (Vec<String>, String, usize, String),
) -> Result<(), TestCaseError> {
    let mut spec = CommandSpec {
        name: "fuzz".into(),
        description: String::new(),
        binary: PathBuf::from("/bin/true"),
        args,
        params: BTreeMap::from([(
            "p0".to_owned(),
            ParamSchema::String {
                pattern: pattern.clone(),
                max_len,
            },
        )]),
        timeout: None,
        output_cap: None,
        run_as: None,
        working_dir: None,
        env: Vec::new(),
    };
    spec.args.push("{p0}".into());
    let Ok(command) = Command::from_spec(spec.clone(), etc()) else {
        return Ok(());
    };
    // Only a pattern that is a regular expression on its own keeps its meaning inside
    // the anchors (see `a_pattern_cannot_break_out_of_its_anchors`).
    prop_assert!(
        Regex::new(&pattern).is_ok(),
        "pattern {pattern:?} is no regular expression on its own, yet it was accepted"
    );
    let values = BTreeMap::from([("p0".to_owned(), Value::from(value.clone()))]);
    if let Ok(argv) = command.render(&values) {
        prop_assert_eq!(argv.len(), spec.args.len());
        let schema = ParamSchema::String { pattern, max_len };
        let text = accepted_text(&schema, &Value::from(value.clone()));
        prop_assert_eq!(text, Some(value));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn fuzz_render(case in case_and_values()) {
        check_render(case)?;
    }

    #[test]
    fn fuzz_specs(case in specs()) {
        check_specs(case)?;
    }
}

/// Coverage-guided entry (`fuzz/`). A first byte below 128: a command entry read from the
/// bytes (parameter slots, argument templates), then the parameters' values as a JSON object
/// (or, where the rest is no JSON, one string per line). Otherwise: template arguments, the
/// pattern and the value, one per line, and two bytes of length limit.
pub fn fuzz_bytes(data: &[u8]) {
    let mut b = axon_fuzzkit::Bytes::new(data);
    if b.u8() >= 128 {
        let args: Vec<String> = (0..b.u8() % 4)
            .map(|_| String::from_utf8_lossy(b.until(b'\n')).into_owned())
            .collect();
        let pattern = String::from_utf8_lossy(b.until(b'\n')).into_owned();
        let value = String::from_utf8_lossy(b.until(b'\n')).into_owned();
        let max_len = usize::from(b.u16());
        axon_fuzzkit::holds(check_specs((args, pattern, max_len, value)));
        return;
    }
    let n = usize::from(b.u8() % 3) + 1;
    let schemas: Vec<ParamSchema> = (0..n)
        .map(|_| match b.u8() % 4 {
            0 => ParamSchema::Enum {
                values: (0..b.u8() % 3 + 1)
                    .filter_map(|_| b.pick(ENUM_VALUES))
                    .map(str::to_owned)
                    .collect(),
            },
            1 => {
                let (x, y) = (i64::from(b.u16() as i16), i64::from(b.u16() as i16));
                ParamSchema::Integer {
                    min: x.min(y),
                    max: x.max(y),
                }
            }
            2 => ParamSchema::String {
                pattern: b.pick(PATTERNS).unwrap_or(".*").to_owned(),
                max_len: usize::from(b.u8()) + 1,
            },
            _ => ParamSchema::Unit,
        })
        .collect();
    let args: Vec<Arg> = (0..b.u8() % 5)
        .map(|_| match b.u8() % 2 {
            0 => Arg::Fixed(b.pick(FIXED).unwrap_or("")),
            _ => Arg::Uses(
                b.pick(PRE).unwrap_or(""),
                usize::from(b.u8()) % n,
                b.pick(POST).unwrap_or(""),
                (b.u8() % 2 == 1).then(|| usize::from(b.u8()) % n),
            ),
        })
        .collect();
    let case = every_parameter_used(schemas, args);
    let rest = b.rest();
    let values: BTreeMap<String, Value> = serde_json::from_slice(rest).unwrap_or_else(|_| {
        rest.split(|&c| c == b'\n')
            .enumerate()
            .map(|(i, v)| (format!("p{i}"), Value::from(String::from_utf8_lossy(v))))
            .collect()
    });
    axon_fuzzkit::holds(check_render((case, values)));
}

/// What the coverage-guided fuzzer found (`fuzz/regressions/exec/`), its seeds, and fixed
/// inputs, through the same entry.
#[test]
fn coverage_guided_inputs_replay() {
    let fuzz_dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz"));
    assert!(axon_fuzzkit::replay(fuzz_dir, "exec", 512, fuzz_bytes) >= 512);
}

/// Found by `fuzz_specs` (minimal input: pattern `a)(`): a pattern was wrapped as
/// `^(?:PATTERN)$` without first being checked alone, so unbalanced parentheses closed the
/// group and the alternation escaped the anchors: `[a-z]+)|(.*` became `^(?:[a-z]+)|(.*)$`,
/// which matches every value. Such a pattern is now refused when the command is loaded.
#[test]
fn a_pattern_cannot_break_out_of_its_anchors() {
    let spec = CommandSpec {
        name: "fuzz".into(),
        description: String::new(),
        binary: PathBuf::from("/bin/true"),
        args: vec!["{p0}".into()],
        params: BTreeMap::from([(
            "p0".to_owned(),
            ParamSchema::String {
                pattern: "[a-z]+)|(.*".into(),
                max_len: 64,
            },
        )]),
        timeout: None,
        output_cap: None,
        run_as: None,
        working_dir: None,
        env: Vec::new(),
    };
    let command = match Command::from_spec(spec, etc()) {
        Err(_) => return,
        Ok(command) => command,
    };
    let values = BTreeMap::from([("p0".to_owned(), json!("/etc/shadow"))]);
    assert!(
        command.render(&values).is_err(),
        "a [a-z]+ slot rendered {:?}",
        command.render(&values)
    );
}
