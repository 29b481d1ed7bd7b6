//! Small constructors for the nftables JSON expressions and statements kube-proxy's rules are
//! made of, so the rendering code reads like the `nft` rule it makes (`ip daddr`, `goto`, …).

use std::borrow::Cow;
use std::collections::HashSet;

use nftables::expr::{
    BinaryOperation, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, NgMode,
    Numgen, Payload, PayloadField, Prefix, SetItem, Verdict, CT,
};
use nftables::stmt::{self, JumpTarget, Mangle, Match, Operator, Statement, VerdictMap, NAT};

/// One rule: the statements of one `nft add rule` line.
pub type Rule = Vec<Statement<'static>>;

pub fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

pub fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub fn string(value: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(value.into()))
}

/// `@name`: a reference to a named set or map.
pub fn set_ref(name: &str) -> Expression<'static> {
    string(format!("@{name}"))
}

pub fn prefix(network: ipnet::Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(string(network.network().to_string())),
        len: u32::from(network.prefix_len()),
    }))
}

/// `{ a, b }`: an anonymous set, as in `ip daddr { 10.96.0.0/16 }`.
pub fn anonymous_set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

pub fn concat(parts: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(parts))
}

/// `left == right` (`left right` in nft's syntax).
pub fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

pub fn ne(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

/// `ct state new`.
pub fn ct_state_new() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: Cow::Borrowed("state"),
            family: None,
            dir: None,
        })),
        right: string("new"),
        op: Operator::IN,
    })
}

/// `fib <addr> type local`: the address is one of this node's.
pub fn fib_type_local(flag: FibFlag) -> Statement<'static> {
    eq(
        Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: HashSet::from([flag]),
        })),
        string("local"),
    )
}

pub fn jump(target: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(target.to_string()),
    })
}

pub fn goto(target: &str) -> Statement<'static> {
    Statement::Goto(JumpTarget {
        target: Cow::Owned(target.to_string()),
    })
}

pub fn goto_verdict(target: &str) -> Expression<'static> {
    Expression::Verdict(Verdict::Goto(JumpTarget {
        target: Cow::Owned(target.to_string()),
    }))
}

/// `<key> vmap @map`.
pub fn vmap(key: Expression<'static>, map: &str) -> Statement<'static> {
    Statement::VerdictMap(VerdictMap {
        key,
        data: set_ref(map),
    })
}

/// `numgen random mod N vmap { 0 : goto a, 1 : goto b, … }`: one endpoint chain at random.
pub fn numgen_vmap(targets: &[String]) -> Statement<'static> {
    let items = targets
        .iter()
        .enumerate()
        .map(|(i, target)| SetItem::Mapping(Expression::Number(i as u32), goto_verdict(target)))
        .collect();
    Statement::VerdictMap(VerdictMap {
        key: Expression::Named(NamedExpression::Numgen(Numgen {
            mode: NgMode::Random,
            ng_mod: targets.len() as u32,
            offset: None,
        })),
        data: Expression::Named(NamedExpression::Set(items)),
    })
}

/// `meta mark set meta mark | <bits>` (or `^`, to clear them again).
pub fn set_mark(
    op: fn(Expression<'static>, Expression<'static>) -> BinaryOperation<'static>,
    bits: u32,
) -> Statement<'static> {
    Statement::Mangle(Mangle {
        key: meta(MetaKey::Mark),
        value: Expression::BinaryOperation(Box::new(op(
            meta(MetaKey::Mark),
            Expression::Number(bits),
        ))),
    })
}

pub fn or(a: Expression<'static>, b: Expression<'static>) -> BinaryOperation<'static> {
    BinaryOperation::OR(vec![a, b])
}

pub fn xor(a: Expression<'static>, b: Expression<'static>) -> BinaryOperation<'static> {
    BinaryOperation::XOR(a, b)
}

/// `meta mark & <bits> == 0`.
pub fn mark_clear(bits: u32) -> Statement<'static> {
    eq(
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(
            meta(MetaKey::Mark),
            Expression::Number(bits),
        ))),
        Expression::Number(0),
    )
}

/// `update @set { ip saddr }`: remember the client for session affinity.
pub fn update_set_with_saddr(set: &str) -> Statement<'static> {
    Statement::Set(stmt::Set {
        op: stmt::SetOp::Update,
        elem: payload("ip", "saddr"),
        set: Cow::Owned(format!("@{set}")),
    })
}

pub fn dnat(ip: std::net::Ipv4Addr, port: u16) -> Statement<'static> {
    Statement::DNAT(Some(NAT {
        addr: Some(string(ip.to_string())),
        family: None,
        port: Some(Expression::Number(u32::from(port))),
        flags: None,
    }))
}

pub fn masquerade_fully_random() -> Statement<'static> {
    Statement::Masquerade(Some(NAT {
        addr: None,
        family: None,
        port: None,
        flags: Some(HashSet::from([stmt::NATFlag::FullyRandom])),
    }))
}

/// A counter a learner can watch with `nft list chain …`. Written `"counter": null`, which
/// nft reads as a new counter at zero, like `{"packets": 0, "bytes": 0}`: one JSON object
/// less for each of a large table's 10,000 endpoints to parse.
pub fn counter() -> Statement<'static> {
    Statement::Counter(stmt::Counter::Anonymous(None))
}
