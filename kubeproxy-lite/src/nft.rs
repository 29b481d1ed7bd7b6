//! The kernel side: `nft -j -f -` through the `nftables` crate, and listing what a table holds.
//! Behind a trait so the proxier's tests can use a fake that records transactions.

use crate::names::TABLE;
use crate::transaction::{Existing, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`nft` could not be run (install it with `apt-get install nftables`)")]
    Missing(#[source] std::io::Error),
    #[error("nft rejected the transaction: {stderr}")]
    Rejected { stderr: String },
    #[error("listing the {what} of table ip {TABLE}")]
    List {
        what: &'static str,
        #[source]
        source: nftables::helper::NftablesError,
    },
    #[error("nft printed JSON we could not read")]
    BadJson(#[source] serde_json::Error),
}

pub trait Nft: Send + Sync {
    /// Apply one transaction: all of it or nothing.
    fn apply(&self, transaction: &Transaction) -> Result<(), Error>;
    /// The per-service chains and sets the table holds now (empty if there is no table).
    fn existing(&self) -> Result<Existing, Error>;
}

/// The real `nft`, in this process's network namespace.
#[derive(Debug, Clone, Default)]
pub struct NftCommand;

impl Nft for NftCommand {
    fn apply(&self, transaction: &Transaction) -> Result<(), Error> {
        // The crate's `apply_ruleset` lets nft's error message go to our stderr; the error
        // should carry it, so the same `nft -j -f -` is run here with stderr captured.
        use std::io::Write;
        let json = transaction.to_json();
        let mut child = std::process::Command::new("nft")
            .args(["-j", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(Error::Missing)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(json.as_bytes()).map_err(Error::Missing)?;
        }
        let output = child.wait_with_output().map_err(Error::Missing)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Rejected {
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    fn existing(&self) -> Result<Existing, Error> {
        // Both lists in one `nft` run: each run reads the whole ruleset into nft's cache
        // first, which is most of its time on a large table. Prints one document per list.
        const LIST_CHAINS_AND_SETS: &str = r#"{"nftables":[{"list":{"chains":{"family":"ip"}}},{"list":{"sets":{"family":"ip"}}}]}"#;
        let output = nftables::helper::apply_ruleset_raw(
            LIST_CHAINS_AND_SETS,
            nftables::helper::DEFAULT_NFT,
            nftables::helper::DEFAULT_ARGS,
        )
        .map_err(|source| Error::List {
            what: "chains and sets",
            source,
        })?;
        let mut existing = Existing::default();
        for document in output.lines().filter(|l| !l.trim().is_empty()) {
            existing.chains.extend(names_in_table(document, "chain")?);
            existing.sets.extend(names_in_table(document, "set")?);
        }
        Ok(existing)
    }
}

/// The names of the `kind` objects of our table in `nft -j list …` output.
fn names_in_table(json: &str, kind: &str) -> Result<Vec<String>, Error> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_str(json).map_err(Error::BadJson)?;
    Ok(value["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|object| object.get(kind))
        .filter(|object| object["table"] == TABLE)
        .filter_map(|object| object["name"].as_str().map(String::from))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_our_tables_names_are_listed() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
            {"chain":{"family":"ip","table":"kube-proxy","name":"services","handle":1}},
            {"chain":{"family":"ip","table":"other","name":"x","handle":2}}]}"#;
        assert_eq!(super::names_in_table(json, "chain").unwrap(), ["services"]);
        assert!(super::names_in_table("", "set").unwrap().is_empty());
    }
}
