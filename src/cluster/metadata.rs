//! The metadata group's state: the members, the epoch of the member list,
//! and the id counter that generated codes are leased from.
//!
//! Every node replicates it (as a voter or a learner), so every node
//! computes the same placement from it (`placement.rs`). Ids are handed out
//! in blocks by the group's log, so two nodes never draw the same id, and
//! the permutation every node shares turns distinct ids into distinct codes,
//! whatever the nodes are called.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{MetaCommand, NodeId, Outcome, Refusal};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Node name (`--node-id`) -> its Raft id and address.
    pub members: BTreeMap<String, Member>,
    /// Bumped by every change of `members`.
    pub epoch: u64,
    /// The first id no lease has covered yet.
    pub next_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub raft_id: NodeId,
    pub addr: String,
}

impl MetaState {
    pub fn apply(&mut self, cmd: MetaCommand) -> Outcome {
        match cmd {
            MetaCommand::Join { name, raft_id, addr } => {
                if self.members.iter().any(|(n, m)| m.raft_id == raft_id && *n != name) {
                    return Outcome::Refused { reason: Refusal::Taken };
                }
                let member = Member { raft_id, addr };
                if self.members.get(&name) != Some(&member) {
                    self.members.insert(name, member);
                    self.epoch += 1;
                }
                Outcome::Done
            }
            MetaCommand::Remove { name } => match self.members.remove(&name) {
                Some(_) => {
                    self.epoch += 1;
                    Outcome::Done
                }
                None => Outcome::Refused { reason: Refusal::NotFound },
            },
            MetaCommand::Lease { count } => {
                let first = self.next_id;
                self.next_id = self.next_id.saturating_add(count);
                Outcome::Lease { first }
            }
        }
    }

    pub fn name_of(&self, raft_id: NodeId) -> Option<&str> {
        self.members.iter().find(|(_, m)| m.raft_id == raft_id).map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_never_overlap_and_a_raft_id_has_one_name() {
        let mut m = MetaState::default();
        let lease = |m: &mut MetaState| match m.apply(MetaCommand::Lease { count: 100 }) {
            Outcome::Lease { first } => first,
            other => panic!("{other:?}"),
        };
        assert_eq!((lease(&mut m), lease(&mut m)), (0, 100));
        assert!(matches!(m.apply(MetaCommand::Join { name: "a".into(), raft_id: 7, addr: "x:1".into() }), Outcome::Done));
        assert!(matches!(
            m.apply(MetaCommand::Join { name: "b".into(), raft_id: 7, addr: "x:2".into() }),
            Outcome::Refused { reason: Refusal::Taken }
        ));
        assert!(matches!(m.apply(MetaCommand::Join { name: "a".into(), raft_id: 9, addr: "x:1".into() }), Outcome::Done));
        assert_eq!(m.members["a"].raft_id, 9);
        assert_eq!(m.epoch, 2);
    }
}
