//! Where each group's replicas belong: the ring over the members' names,
//! keyed by the group. Pure, so every node with the same metadata computes
//! the same targets; partition leaders then move their group's membership
//! toward them (`Cluster::reconcile`).

use std::collections::BTreeSet;

use super::command::NodeId;
use super::metadata::MetaState;
use super::ring::Ring;

pub struct Placement {
    pub epoch: u64,
    ring: Ring,
    partitions: u32,
    replication: usize,
}

impl Placement {
    pub fn new(meta: &MetaState, partitions: u32, replication: usize, vnodes: usize) -> Placement {
        let names: Vec<&str> = meta.members.keys().map(String::as_str).collect();
        Placement { epoch: meta.epoch, ring: Ring::new(&names, vnodes), partitions, replication }
    }

    fn key(&self, group: u32) -> String {
        if group == self.partitions {
            "metadata".to_string()
        } else {
            format!("partition/{group}")
        }
    }

    /// The names of the nodes that should vote in `group`.
    pub fn voter_names(&self, group: u32) -> Vec<&str> {
        self.ring.holders(&self.key(group), self.replication)
    }

    /// The Raft ids of the nodes that should vote in `group`.
    pub fn voters(&self, meta: &MetaState, group: u32) -> BTreeSet<NodeId> {
        self.voter_names(group).into_iter().filter_map(|n| meta.members.get(n).map(|m| m.raft_id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::command::MetaCommand;
    use crate::cluster::metadata::MetaState;

    fn meta(names: &[&str]) -> MetaState {
        let mut m = MetaState::default();
        for (i, n) in names.iter().enumerate() {
            m.apply(MetaCommand::Join { name: n.to_string(), raft_id: i as u64 + 1, addr: format!("127.0.0.1:{}", 9000 + i) });
        }
        m
    }

    #[test]
    fn every_group_gets_r_distinct_voters_and_a_join_moves_only_some() {
        let three = meta(&["node-11", "node-23", "node-5"]);
        let p3 = Placement::new(&three, 64, 3, 128);
        for g in 0..=64 {
            assert_eq!(p3.voters(&three, g).len(), 3);
        }
        let four = meta(&["node-11", "node-23", "node-5", "node-7"]);
        let p4 = Placement::new(&four, 64, 3, 128);
        let moved = (0..64).filter(|&g| p3.voters(&three, g) != p4.voters(&four, g)).count();
        // Each group that changes swaps one voter for the new node.
        assert!(moved > 0 && moved < 64, "{moved} of 64 groups moved");
        for g in 0..64 {
            let (a, b) = (p3.voters(&three, g), p4.voters(&four, g));
            assert!(a.difference(&b).count() <= 1);
        }
    }
}
