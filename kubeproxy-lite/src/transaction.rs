//! From rendered rules to one `nft -j -f -` transaction: the full sync that (re)builds the whole
//! table at start-up, and the partial sync that touches only the Services that changed.
//!
//! Commands are grouped in phases so that one transaction is always valid whatever changed:
//! references go away before what they point at (map elements and flushed rules before
//! chains and sets are deleted), and targets exist before anything points at them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use nftables::expr::{Expression, Verdict as NfVerdict};
use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, Rule as NfRule, Set, SetFlag, SetTypeValue,
};
use nftables::stmt::Statement;
use nftables::types::NfFamily;
use serde::Serialize;

use crate::expr::{self, Rule};
use crate::names::{self, TABLE};
use crate::render::{Key, NodeContext, ServiceRules, Verdict};
pub use crate::skeleton::{skeleton, skeleton_names};

/// One command of a transaction. Verdict maps are written by hand: the `nftables` crate
/// (0.6) has no `verdict` data type for a map's values; the JSON is libnftables' own.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Command {
    Nf(NfCmd<'static>),
    AddVerdictMap {
        add: VerdictMapObject,
    },
    /// A command already turned into JSON: a full sync writes its rules' commands straight
    /// from the rendered rules (borrowed, not copied), while the table is being listed.
    Json(Box<serde_json::value::RawValue>),
}

#[derive(Debug, Clone, Serialize)]
pub struct VerdictMapObject {
    pub map: VerdictMap,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerdictMap {
    pub family: NfFamily,
    pub table: &'static str,
    pub name: &'static str,
    #[serde(rename = "type")]
    pub key_type: Vec<&'static str>,
    pub map: &'static str,
    pub comment: &'static str,
}

/// An `nft -j -f -` document: every command in one kernel transaction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Transaction {
    #[serde(rename = "nftables")]
    pub commands: Vec<Command>,
}

impl Transaction {
    pub fn to_json(&self) -> String {
        // Sized up front: a full sync's JSON is ~9 MB, most of it already written.
        let capacity = self
            .commands
            .iter()
            .map(|command| match command {
                Command::Json(json) => json.get().len() + 1,
                _ => COMMAND_JSON_ESTIMATE,
            })
            .sum::<usize>()
            + 16;
        let mut json = Vec::with_capacity(capacity);
        match serde_json::to_writer(&mut json, self) {
            // serde_json writes UTF-8 only.
            Ok(()) => String::from_utf8(json).unwrap_or_default(),
            Err(_) => String::from("{\"nftables\":[]}"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// This transaction with two `list` commands at its end that make libnftables read only
    /// what evaluating it needs, when that is at most one named set or map; None otherwise.
    ///
    /// Before evaluating, libnftables 1.0.6 reads a cache of the table: for any `add rule` or
    /// element, every chain of the namespace (~13 ms of CPU with 11,000 chains, half of a
    /// partial sync's cost). It evaluates a rule without looking its chain or its jump
    /// targets up, though; only sets and maps must be known (their types), and `add chain`,
    /// `flush chain` and the deletes tolerate a cache without them. The last `list` commands
    /// of a run narrow the whole run's cache: `list chain` to that one chain and its rules,
    /// then `list set` (or `map`) to that one set and its elements. A set or map the
    /// transaction adds itself (a full sync adds them all) is known from its `add`, even if
    /// the kernel has it already, so it needs no reading. Both lists print a few lines,
    /// which are ignored. A newer libnftables reads no chains for rules at all, and these
    /// two lists stay as cheap there.
    ///
    /// Large transactions (full syncs) are left as they are: reading the cache is a small
    /// part of their cost, less than looking through all their rules for sets would be.
    pub fn with_narrow_cache(&self) -> Option<Transaction> {
        if self.commands.len() > NARROWED_COMMANDS_MAX {
            return None;
        }
        let mut needed = self.sets_to_know(2);
        if needed.len() > 1 {
            return None;
        }
        let set = needed
            .pop_first()
            .unwrap_or_else(|| names::NODEPORT_IPS_SET.to_string());
        let mut commands = self.commands.clone();
        commands.push(Command::Nf(NfCmd::List(NfListObject::Chain(chain(
            names::MARK_MASQ_CHAIN,
        )))));
        commands.push(Command::Nf(NfCmd::List(if names::is_map(&set) {
            NfListObject::Map(Box::new(nftables::schema::Map {
                family: NfFamily::IP,
                table: Cow::Borrowed(TABLE),
                name: Cow::Owned(set),
                ..Default::default()
            }))
        } else {
            NfListObject::Set(Box::new(self::set(
                &set,
                nftables::schema::SetType::Ipv4Addr,
            )))
        })));
        Some(Transaction { commands })
    }

    /// The table's sets and maps that exist before this transaction and that libnftables
    /// must know to evaluate it: where elements go or leave, and what rules refer to
    /// (`@name`). Stops early once `limit` are found.
    fn sets_to_know(&self, limit: usize) -> BTreeSet<String> {
        let created: BTreeSet<&str> = self
            .commands
            .iter()
            .filter_map(|command| match command {
                Command::Nf(NfCmd::Add(NfListObject::Set(set))) => Some(set.name.as_ref()),
                Command::AddVerdictMap { add } => Some(add.map.name),
                _ => None,
            })
            .collect();
        let mut needed = BTreeSet::new();
        for command in &self.commands {
            match command {
                Command::Nf(
                    NfCmd::Add(NfListObject::Element(element))
                    | NfCmd::Delete(NfListObject::Element(element)),
                ) => {
                    needed.insert(element.name.to_string());
                }
                Command::Nf(NfCmd::Flush(FlushObject::Set(set))) => {
                    needed.insert(set.name.to_string());
                }
                Command::Nf(NfCmd::Flush(FlushObject::Map(map))) => {
                    needed.insert(map.name.to_string());
                }
                Command::Nf(NfCmd::Add(NfListObject::Rule(rule))) => {
                    let statements = serde_json::to_value(&rule.expr).unwrap_or_default();
                    set_references(&statements, &mut needed);
                }
                Command::Json(json) => {
                    let command = serde_json::from_str(json.get()).unwrap_or_default();
                    set_references(&command, &mut needed);
                }
                _ => {}
            }
            needed.retain(|name| !created.contains(name.as_str()));
            if needed.len() >= limit {
                break;
            }
        }
        needed
    }
}

/// See [`Transaction::with_narrow_cache`].
const NARROWED_COMMANDS_MAX: usize = 1000;

/// Bytes of JSON reserved for a command not yet serialised (most are shorter).
const COMMAND_JSON_ESTIMATE: usize = 200;

/// The names of the sets referred to (`"@name"`) anywhere in a rule's JSON.
fn set_references(json: &serde_json::Value, names: &mut BTreeSet<String>) {
    match json {
        serde_json::Value::String(text) => {
            if let Some(name) = text.strip_prefix('@') {
                names.insert(name.to_string());
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                set_references(item, names);
            }
        }
        serde_json::Value::Object(fields) => {
            for value in fields.values() {
                set_references(value, names);
            }
        }
        _ => {}
    }
}

/// The commands of a transaction, by phase (see the module comment).
#[derive(Default)]
struct Phases {
    delete_elements: Vec<Command>,
    flush_chains: Vec<Command>,
    delete_sets: Vec<Command>,
    add_sets: Vec<Command>,
    create_chains: Vec<Command>,
    write_rules: Vec<Command>,
    add_elements: Vec<Command>,
    delete_chains: Vec<Command>,
}

impl Phases {
    fn into_transaction(self, mut head: Vec<Command>) -> Transaction {
        head.extend(self.delete_elements);
        head.extend(self.flush_chains);
        head.extend(self.delete_sets);
        head.extend(self.add_sets);
        head.extend(self.create_chains);
        head.extend(self.write_rules);
        head.extend(self.add_elements);
        head.extend(self.delete_chains);
        Transaction { commands: head }
    }
}

pub(crate) fn add(object: NfListObject<'static>) -> Command {
    Command::Nf(NfCmd::Add(object))
}

pub(crate) fn delete(object: NfListObject<'static>) -> Command {
    Command::Nf(NfCmd::Delete(object))
}

pub(crate) fn chain(name: &str) -> Chain<'static> {
    Chain {
        family: NfFamily::IP,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(name.to_string()),
        ..Default::default()
    }
}

pub(crate) fn flush_chain(name: &str) -> Command {
    Command::Nf(NfCmd::Flush(FlushObject::Chain(chain(name))))
}

pub(crate) fn rule(chain: &str, statements: Rule) -> Command {
    add(NfListObject::Rule(NfRule {
        family: NfFamily::IP,
        table: Cow::Borrowed(TABLE),
        chain: Cow::Owned(chain.to_string()),
        expr: Cow::Owned(statements),
        handle: None,
        index: None,
        comment: None,
    }))
}

/// [`rule`], already as JSON (see [`Command::Json`]), from borrowed statements.
pub(crate) fn rule_json(chain: &str, statements: &[Statement<'static>]) -> Command {
    let command = NfCmd::Add(NfListObject::Rule(NfRule {
        family: NfFamily::IP,
        table: Cow::Borrowed(TABLE),
        chain: Cow::Borrowed(chain),
        expr: Cow::Borrowed(statements),
        handle: None,
        index: None,
        comment: None,
    }));
    match serde_json::value::to_raw_value(&command) {
        Ok(json) => Command::Json(json),
        // Not expected (the crate's types always serialise); the rule is sent either way.
        Err(_) => rule(chain, statements.to_vec()),
    }
}

pub(crate) fn set(name: &str, key_type: nftables::schema::SetType) -> Set<'static> {
    Set {
        family: NfFamily::IP,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(name.to_string()),
        handle: None,
        set_type: SetTypeValue::Single(key_type),
        policy: None,
        flags: None,
        elem: None,
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    }
}

fn affinity_set(name: &str, timeout: u32) -> Set<'static> {
    Set {
        // nft 1.0.6's JSON parser knows no `dynamic` flag; the kernel adds it itself.
        flags: Some([SetFlag::Timeout].into_iter().collect()),
        timeout: Some(timeout),
        ..set(name, nftables::schema::SetType::Ipv4Addr)
    }
}

fn key_expression(key: &Key) -> Expression<'static> {
    match key {
        Key::Addr(ip) => expr::string(ip.to_string()),
        Key::AddrProtoPort(ip, protocol, port) => expr::concat(vec![
            expr::string(ip.to_string()),
            expr::string(protocol.as_str()),
            Expression::Number(u32::from(*port)),
        ]),
        Key::ProtoPort(protocol, port) => expr::concat(vec![
            expr::string(protocol.as_str()),
            Expression::Number(u32::from(*port)),
        ]),
    }
}

fn verdict_expression(verdict: &Verdict) -> Expression<'static> {
    match verdict {
        Verdict::Goto(chain) => expr::goto_verdict(chain),
        Verdict::Drop => Expression::Verdict(NfVerdict::Drop),
    }
}

pub(crate) fn element(
    container: &str,
    key: &Key,
    value: Option<&Verdict>,
    with_value: bool,
) -> NfListObject<'static> {
    elements(container, vec![element_item(key, value, with_value)])
}

/// One element of a set (its key) or of a map (`[key, value]`, with `with_value`).
fn element_item(key: &Key, value: Option<&Verdict>, with_value: bool) -> Expression<'static> {
    match value {
        Some(verdict) if with_value => {
            Expression::List(vec![key_expression(key), verdict_expression(verdict)])
        }
        _ => key_expression(key),
    }
}

fn elements(container: &str, items: Vec<Expression<'static>>) -> NfListObject<'static> {
    NfListObject::Element(Element {
        family: NfFamily::IP,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(container.to_string()),
        elem: Cow::Owned(items),
    })
}

type Elements = BTreeMap<(&'static str, Key), Option<Verdict>>;

/// Commands turning `old` into `new`, one Service's rules each.
fn diff(phases: &mut Phases, old: &ServiceRules, new: &ServiceRules) {
    diff_elements(phases, &old.elements, &new.elements);
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(old_rules) if old_rules == rules => continue,
            Some(_) => phases.flush_chains.push(flush_chain(name)),
            None => phases
                .create_chains
                .push(add(NfListObject::Chain(chain(name)))),
        }
        for statements in rules {
            phases.write_rules.push(rule(name, statements.clone()));
        }
    }
    for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
        // Flushed first: its rules may jump to chains deleted in the same transaction.
        phases.flush_chains.push(flush_chain(name));
        phases
            .delete_chains
            .push(delete(NfListObject::Chain(chain(name))));
    }
    for (name, timeout) in &new.affinity_sets {
        match old.affinity_sets.get(name) {
            Some(old_timeout) if old_timeout == timeout => {}
            Some(_) => {
                phases
                    .delete_sets
                    .push(delete(NfListObject::Set(Box::new(set(
                        name,
                        nftables::schema::SetType::Ipv4Addr,
                    )))));
                phases
                    .add_sets
                    .push(add(NfListObject::Set(Box::new(affinity_set(
                        name, *timeout,
                    )))));
            }
            None => phases
                .add_sets
                .push(add(NfListObject::Set(Box::new(affinity_set(
                    name, *timeout,
                ))))),
        }
    }
    for name in old
        .affinity_sets
        .keys()
        .filter(|n| !new.affinity_sets.contains_key(*n))
    {
        phases
            .delete_sets
            .push(delete(NfListObject::Set(Box::new(set(
                name,
                nftables::schema::SetType::Ipv4Addr,
            )))));
    }
}

fn diff_elements(phases: &mut Phases, old: &Elements, new: &Elements) {
    for ((container, key), value) in old {
        if new.get(&(*container, key.clone())) != Some(value) {
            phases
                .delete_elements
                .push(delete(element(container, key, value.as_ref(), false)));
        }
    }
    for ((container, key), value) in new {
        if old.get(&(*container, key.clone())) != Some(value) {
            phases
                .add_elements
                .push(add(element(container, key, value.as_ref(), true)));
        }
    }
}

/// A partial sync: only the Services whose rules changed, `(before, after)` each.
pub fn partial_sync<'a>(
    changes: impl IntoIterator<Item = (&'a ServiceRules, &'a ServiceRules)>,
) -> Transaction {
    let mut phases = Phases::default();
    for (old, new) in changes {
        if old != new {
            diff(&mut phases, old, new);
        }
    }
    phases.into_transaction(Vec::new())
}

/// What a full sync found in the table before (chain and set names), to remove the stale.
#[derive(Debug, Default, Clone)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

/// A full sync: the table's skeleton, every Service, and the deletion of every per-service
/// chain or affinity set an earlier run left that is no longer wanted. Affinity sets that
/// stay are kept with their contents (`add` of an existing set changes nothing).
///
/// The order is chosen for the kernel's cost on large tables (measured with nft 1.0.6 and
/// kernel 6.x, 1,000 Services × 10 endpoints): binding or unbinding an anonymous set (the
/// `numgen … vmap { … }` of each service chain) walks the transaction's whole list of
/// changes so far, so chains holding such rules are flushed and rewritten first, while the
/// list is short, and the 10,000 endpoint chains after them. Chains that do not exist yet
/// are only created, not flushed. Together: 1.48 → 1.23 s of CPU for the restart of that
/// table, 1.20 → 0.96 s for a new one. And the service chains are all flushed before any is
/// rewritten: the kernel names each new anonymous map (`__map%d`) by `sscanf`-ing every
/// active set of the table, and the maps of flushed chains are no longer active, so each
/// new map is compared with the new ones only, not with the 1,000 it replaces (restart:
/// ~0.92 → ~0.87 s of CPU, its time in `nf_tables_newset` 126 → 85 ms).
pub fn full_sync<'a>(
    node: &NodeContext,
    services: impl IntoIterator<Item = &'a ServiceRules>,
    existing: &Existing,
) -> Transaction {
    PreparedFullSync::new(node, services).finish(existing)
}

/// One `add element` per set or map, with all its elements (`elements` are sorted by
/// container): one command each for libnftables to read and look its set up for, instead of
/// one per element (2,000 for 1,000 Services).
fn add_elements_by_container(
    elements: BTreeMap<&(&'static str, Key), &Option<Verdict>>,
) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut current: Option<(&str, Vec<Expression<'static>>)> = None;
    for ((container, key), value) in elements {
        match &mut current {
            Some((name, items)) if name == container => {
                items.push(element_item(key, value.as_ref(), true));
            }
            _ => {
                if let Some((name, items)) = current.take() {
                    commands.push(add(self::elements(name, items)));
                }
                current = Some((container, vec![element_item(key, value.as_ref(), true)]));
            }
        }
    }
    if let Some((name, items)) = current {
        commands.push(add(self::elements(name, items)));
    }
    commands
}

/// A full sync built as far as it can be without knowing what the table holds: every rule
/// command, already as JSON, and every element command, which is most of the work (~25 ms
/// for 1,000 Services × 10 endpoints), so that it can be done while the table is being
/// listed.
/// [`PreparedFullSync::finish`] then only places these commands among the few that depend
/// on the listing.
pub struct PreparedFullSync {
    skeleton: Vec<Command>,
    affinity_sets: BTreeMap<String, u32>,
    /// Chain name → the commands adding its rules.
    chains: BTreeMap<String, Vec<Command>>,
    elements: Vec<Command>,
}

impl PreparedFullSync {
    pub fn new<'a>(
        node: &NodeContext,
        services: impl IntoIterator<Item = &'a ServiceRules>,
    ) -> PreparedFullSync {
        let mut chains: BTreeMap<String, Vec<Command>> = BTreeMap::new();
        let mut affinity_sets: BTreeMap<String, u32> = BTreeMap::new();
        // Borrowed, not copied: each rule is written once, into its command's JSON.
        let mut elements: BTreeMap<&(&'static str, Key), &Option<Verdict>> = BTreeMap::new();
        for rules in services {
            for (name, statements) in &rules.chains {
                let commands = statements
                    .iter()
                    .map(|statements| rule_json(name, statements))
                    .collect();
                chains.insert(name.clone(), commands);
            }
            affinity_sets.extend(rules.affinity_sets.iter().map(|(k, v)| (k.clone(), *v)));
            elements.extend(&rules.elements);
        }
        PreparedFullSync {
            skeleton: skeleton(node),
            affinity_sets,
            chains,
            // The skeleton empties the maps and sets: every element is added again.
            elements: add_elements_by_container(elements),
        }
    }

    /// The transaction, given what the table holds now (see [`full_sync`] for the order).
    pub fn finish(self, existing: &Existing) -> Transaction {
        let PreparedFullSync {
            skeleton: mut commands,
            affinity_sets,
            chains,
            elements,
        } = self;
        // Affinity sets that exist are kept as they are, with their clients: once a rule
        // updates a set the kernel marks it `dynamic`, and adding it again as we first made
        // it fails.
        commands.extend(
            affinity_sets
                .iter()
                .filter(|(name, _)| !existing.sets.contains(name.as_str()))
                .map(|(name, timeout)| {
                    add(NfListObject::Set(Box::new(affinity_set(name, *timeout))))
                }),
        );
        commands.extend(
            chains
                .keys()
                .filter(|name| !existing.chains.contains(name.as_str()))
                .map(|name| add(NfListObject::Chain(chain(name)))),
        );
        let stale_chains: Vec<&String> = existing
            .chains
            .iter()
            .filter(|n| names::is_service_chain(n) && !chains.contains_key(*n))
            .collect();
        let (endpoint_chains, service_chains): (Vec<_>, Vec<_>) = chains
            .into_iter()
            .partition(|(name, _)| names::is_endpoint_chain(name));
        // Every service chain is flushed before any is rewritten (see above).
        commands.extend(
            service_chains
                .iter()
                .filter(|(name, _)| existing.chains.contains(name))
                .map(|(name, _)| flush_chain(name)),
        );
        for (_, rules) in service_chains {
            commands.extend(rules);
        }
        for (name, rules) in endpoint_chains {
            if existing.chains.contains(&name) {
                commands.push(flush_chain(&name));
            }
            commands.extend(rules);
        }
        // Flushed before anything is deleted: their rules may jump to each other or use the
        // stale sets.
        commands.extend(stale_chains.iter().map(|name| flush_chain(name)));
        commands.extend(
            existing
                .sets
                .iter()
                .filter(|n| names::is_affinity_set(n) && !affinity_sets.contains_key(*n))
                .map(|name| {
                    delete(NfListObject::Set(Box::new(set(
                        name,
                        nftables::schema::SetType::Ipv4Addr,
                    ))))
                }),
        );
        commands.extend(elements);
        commands.extend(
            stale_chains
                .into_iter()
                .map(|name| delete(NfListObject::Chain(chain(name)))),
        );
        Transaction { commands }
    }
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;
