//! The policy table's machinery: what one policy registers (its name and its parameters type,
//! which checks itself and builds the policy) and [`PolicySpec`], a policy named in config
//! with its parameters. The table itself is the `policies!` list in `routing/mod.rs`: adding a
//! policy is one file, holding a [`Registration`], and one line there.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Policy, PoolState, NAMES, REGISTRY};
use crate::fleet::PoolMember;

/// A policy's parameters: serde reads them (`#[serde(default, deny_unknown_fields)]`, so a
/// missing key takes its default and a misspelt one is refused); this checks their ranges and
/// builds the policy.
pub trait PolicyParams: fmt::Debug + Send + Sync + 'static {
    /// Checks what types cannot: ranges. The message names the parameter, its default and
    /// the value given.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether the policy can be built over a pool whose members weigh `weights` (a hash ring
    /// must fit in memory). The message says what to change.
    fn check_weights(&self, _weights: &[u32]) -> Result<(), String> {
        Ok(())
    }

    /// The policy for one pool.
    fn build(&self, pool: Build<'_>) -> Box<dyn Policy>;
}

/// What a policy is built from besides its parameters.
#[derive(Debug)]
pub struct Build<'a> {
    /// The pool's members, in pool order.
    pub members: &'a [PoolMember],
    /// Seed of the policy's random draws, so a run is reproducible.
    pub seed: u64,
    /// The pool's routing state: empty for a new pool, what the previous policy learned
    /// (renumbered) on a rebuild.
    pub state: PoolState,
}

/// Reads parameters given by name into a policy's parameters type.
type ParseFn = fn(&Map<String, Value>) -> Result<Arc<dyn DynParams>, ParamError>;

/// One line of the policy table: a name and, through its parameters type, everything else.
pub struct Registration {
    /// The name config uses (`policy: prefix_aware`).
    pub name: &'static str,
    /// Reads parameters given by name into the policy's parameters type.
    parse: ParseFn,
    /// The parameter names the type takes.
    keys: fn() -> &'static [&'static str],
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .finish()
    }
}

impl Registration {
    /// The registration of a policy named `name` whose parameters are a `P`.
    pub const fn new<P>(name: &'static str) -> Self
    where
        P: PolicyParams + DeserializeOwned + Default + PartialEq,
    {
        Self {
            name,
            parse: parse::<P>,
            keys: keys_of::<P>,
        }
    }

    /// The parameter names the policy takes.
    pub fn keys(&self) -> &'static [&'static str] {
        (self.keys)()
    }
}

/// Parameters behind a trait object, comparable.
trait DynParams: PolicyParams {
    fn as_any(&self) -> &dyn Any;
    fn same(&self, other: &dyn DynParams) -> bool;
}

impl<P: PolicyParams + PartialEq> DynParams for P {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn same(&self, other: &dyn DynParams) -> bool {
        other.as_any().downcast_ref::<P>() == Some(self)
    }
}

/// Why parameters did not parse, before the policy's name is attached.
enum ParamError {
    Unknown(String),
    Bad(String),
}

fn parse<P>(given: &Map<String, Value>) -> Result<Arc<dyn DynParams>, ParamError>
where
    P: PolicyParams + DeserializeOwned + Default + PartialEq,
{
    let keys = keys_of::<P>();
    if let Some(k) = given.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(ParamError::Unknown(k.clone()));
    }
    // Each key alone first, so a value of the wrong type is named by its key.
    for (k, v) in given {
        let one: Map<String, Value> = std::iter::once((k.clone(), v.clone())).collect();
        serde_json::from_value::<P>(Value::Object(one))
            .map_err(|e| ParamError::Bad(described(k, &e)))?;
    }
    let p: P = serde_json::from_value(Value::Object(given.clone()))
        .map_err(|e| ParamError::Bad(e.to_string()))?;
    Ok(Arc::new(p))
}

/// serde's complaint about `key`'s value in words a config writer reads.
fn described(key: &str, e: &serde_json::Error) -> String {
    let m = e.to_string();
    match m.split_once(", expected ") {
        Some((what, expected)) if m.starts_with("invalid ") => {
            let plain = match expected {
                "f64" | "f32" => "a number",
                "u32" | "u64" | "u8" | "u16" => "a whole number",
                other => other,
            };
            format!("{key} must be {plain} ({what})")
        }
        _ => format!("{key}: {m}"),
    }
}

/// The field names `P`'s derived `Deserialize` asks for: it names them to the deserializer,
/// which here only listens.
fn keys_of<P: DeserializeOwned>() -> &'static [&'static str] {
    struct Listen(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Listen {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("listening only"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("listening only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut listen = Listen(&[]);
    let _ = P::deserialize(&mut listen);
    listen.0
}

/// A policy spec that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicySpecError {
    /// The name is not a known policy.
    #[error("unknown policy '{0}'; known policies: {known}", known = NAMES.join(", "))]
    Unknown(String),
    /// The policy takes no parameter of this name.
    #[error("policy '{policy}' has no parameter `{key}`; {}", takes(known))]
    UnknownParameter {
        /// The policy.
        policy: &'static str,
        /// The key given.
        key: String,
        /// The keys it takes.
        known: &'static [&'static str],
    },
    /// A parameter has the wrong type or is out of range; the message names it.
    #[error("{0}")]
    BadParameter(String),
}

/// "it takes a, b" or "it takes no parameters".
pub fn takes(known: &[&str]) -> String {
    if known.is_empty() {
        "it takes no parameters".into()
    } else {
        format!("it takes {}", known.join(", "))
    }
}

/// A policy as named in config, with its parameters.
#[derive(Clone)]
pub struct PolicySpec {
    registration: &'static Registration,
    /// The parameters as given, to add to.
    given: Map<String, Value>,
    params: Arc<dyn DynParams>,
}

impl PolicySpec {
    /// Every policy name config accepts, in table order.
    pub const NAMES: &'static [&'static str] = NAMES;

    /// The spec for a policy name with default parameters.
    pub fn from_name(name: &str) -> Result<Self, PolicySpecError> {
        let registration = REGISTRY
            .iter()
            .copied()
            .find(|r| r.name == name)
            .ok_or_else(|| PolicySpecError::Unknown(name.to_owned()))?;
        Self::of(registration)
    }

    fn of(registration: &'static Registration) -> Result<Self, PolicySpecError> {
        let given = Map::new();
        let params = (registration.parse)(&given).map_err(|e| error(registration, e))?;
        Ok(Self {
            registration,
            given,
            params,
        })
    }

    /// The spec for a policy name with these parameters, checked.
    pub fn with_params(name: &str, params: &Map<String, Value>) -> Result<Self, PolicySpecError> {
        let mut spec = Self::from_name(name)?;
        for (k, v) in params {
            spec.set(k, v.clone())?;
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Sets parameter `key` to `value`; its type is checked now, its range by
    /// [`validate`](Self::validate).
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), PolicySpecError> {
        let mut given = self.given.clone();
        given.insert(key.to_owned(), whole(value));
        self.params = (self.registration.parse)(&given).map_err(|e| error(self.registration, e))?;
        self.given = given;
        Ok(())
    }

    /// The config name of this spec.
    pub fn name(&self) -> &'static str {
        self.registration.name
    }

    /// The parameter names this policy takes.
    pub fn keys(&self) -> &'static [&'static str] {
        self.registration.keys()
    }

    /// The parameters, if they are a `P`.
    pub fn params<P: 'static>(&self) -> Option<&P> {
        self.params.as_any().downcast_ref()
    }

    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<(), PolicySpecError> {
        self.params
            .validate()
            .map_err(PolicySpecError::BadParameter)
    }

    /// Whether the policy can be built over members of these weights (see
    /// [`PolicyParams::check_weights`]).
    pub fn check_weights(&self, weights: &[u32]) -> Result<(), String> {
        self.params.check_weights(weights)
    }

    /// Builds the policy for a new pool with these members. `seed` feeds policies that draw
    /// at random, so a run is reproducible for a seed.
    pub fn build(&self, members: &[PoolMember], seed: u64) -> Box<dyn Policy> {
        self.rebuild(members, seed, PoolState::default())
    }

    /// Builds the policy for a pool that keeps `state`, what its previous policy learned
    /// ([`Policy::handover`]).
    pub fn rebuild(&self, members: &[PoolMember], seed: u64, state: PoolState) -> Box<dyn Policy> {
        self.params.build(Build {
            members,
            seed,
            state,
        })
    }
}

/// `value` with whole floating-point numbers (`160.0`, as some config formats read `160`)
/// made integers, so that they fit a whole-number parameter.
fn whole(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() && x.fract() == 0.0 && x.abs() < 9.0e15 => Value::from(x as i64),
            _ => Value::Number(n),
        },
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, whole(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(whole).collect()),
        other => other,
    }
}

fn error(registration: &'static Registration, e: ParamError) -> PolicySpecError {
    match e {
        ParamError::Unknown(key) => PolicySpecError::UnknownParameter {
            policy: registration.name,
            key,
            known: registration.keys(),
        },
        ParamError::Bad(m) => PolicySpecError::BadParameter(m),
    }
}

impl Default for PolicySpec {
    /// `round_robin`.
    fn default() -> Self {
        let params: Arc<dyn DynParams> = Arc::new(super::round_robin::RoundRobinParams::default());
        Self {
            registration: &super::round_robin::REGISTRATION,
            given: Map::new(),
            params,
        }
    }
}

impl PartialEq for PolicySpec {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.params.same(&*other.params)
    }
}

impl fmt::Debug for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.name(), self.params)
    }
}

/// A range error for `name`.
pub(crate) fn non_negative(name: &str, v: f64, default: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a number >= 0 (default {default}), got {v}"
        ))
    }
}

/// `max_report_age` must be above 0.
pub(crate) fn positive_age(age: std::time::Duration) -> Result<(), String> {
    if age.is_zero() {
        Err("max_report_age must be above 0 (default 2s): engine reports would never count".into())
    } else {
        Ok(())
    }
}

/// Reads a duration written as seconds (`2`, `0.5`) or with a unit (`500ms`, `2s`, `1m`,
/// `1h`), for `#[serde(deserialize_with = "...")]`; at most a year.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    let secs = match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => {
            let s = s.trim();
            let at = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (num, unit) = s.split_at(at);
            let scale = match unit.trim() {
                "ms" => 1e-3,
                "" | "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => f64::NAN,
            };
            num.parse::<f64>().map_or(f64::NAN, |n| n * scale)
        }
        _ => f64::NAN,
    };
    if !(secs.is_finite() && (0.0..=YEAR).contains(&secs)) {
        return Err(de::Error::custom(
            "expected a duration such as 500ms, 2s or 1m, at most a year",
        ));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
