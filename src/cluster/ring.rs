//! The consistent-hash ring: which nodes hold a code.
//!
//! Each node owns `vnodes` points at `xxh3("{node}#{i}")`. A code hashes to
//! `xxh3(code)`; walking clockwise from there, the first `r` distinct nodes
//! hold it, the first of them is its owner, and the nodes after them are
//! where writes for an unreachable holder go with a hint. Pure: no I/O, no
//! clock, so every node with the same members computes the same placement.

use xxhash_rust::xxh3::xxh3_64;

#[derive(Clone, Debug, Default)]
pub struct Ring {
    nodes: Vec<String>,
    /// `(point, index into nodes)`, sorted by point.
    points: Vec<(u64, u32)>,
}

pub fn key_hash(code: &str) -> u64 {
    xxh3_64(code.as_bytes())
}

fn point(node: &str, i: usize) -> u64 {
    xxh3_64(format!("{node}#{i}").as_bytes())
}

impl Ring {
    /// A ring of `nodes` (order and duplicates do not matter).
    pub fn new<S: AsRef<str>>(nodes: &[S], vnodes: usize) -> Ring {
        let mut names: Vec<String> = nodes.iter().map(|n| n.as_ref().to_string()).collect();
        names.sort();
        names.dedup();
        let mut points = Vec::with_capacity(names.len() * vnodes);
        for (idx, name) in names.iter().enumerate() {
            points.extend((0..vnodes).map(|i| (point(name, i), idx as u32)));
        }
        // Ties (astronomically rare) are broken by node name, the same everywhere.
        points.sort_unstable();
        Ring { nodes: names, points }
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    pub fn contains(&self, node: &str) -> bool {
        self.nodes.binary_search_by(|n| n.as_str().cmp(node)).is_ok()
    }

    /// Every node, in the order a code's walk meets them: the holders first.
    pub fn walk(&self, code: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::with_capacity(self.nodes.len());
        if self.points.is_empty() {
            return out;
        }
        let h = key_hash(code);
        let start = self.points.partition_point(|&(p, _)| p < h);
        for k in 0..self.points.len() {
            let node = self.nodes[self.points[(start + k) % self.points.len()].1 as usize].as_str();
            if !out.contains(&node) {
                out.push(node);
                if out.len() == self.nodes.len() {
                    break;
                }
            }
        }
        out
    }

    /// The `r` nodes (fewer if the ring is smaller) that hold `code`, owner first.
    pub fn holders(&self, code: &str, r: usize) -> Vec<&str> {
        let mut w = self.walk(code);
        w.truncate(r);
        w
    }

    pub fn holds(&self, node: &str, code: &str, r: usize) -> bool {
        self.holders(code, r).contains(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, written the slow way: every point of every node,
    /// sorted, and the first `r` distinct nodes at or after the key.
    fn naive(nodes: &[String], vnodes: usize, code: &str, r: usize) -> Vec<String> {
        let mut names = nodes.to_vec();
        names.sort();
        names.dedup();
        let mut all: Vec<(u64, String)> = vec![];
        for n in &names {
            for i in 0..vnodes {
                all.push((xxh3_64(format!("{n}#{i}").as_bytes()), n.clone()));
            }
        }
        all.sort();
        let h = xxh3_64(code.as_bytes());
        let mut ordered: Vec<&(u64, String)> = all.iter().filter(|(p, _)| *p >= h).collect();
        ordered.extend(all.iter().filter(|(p, _)| *p < h));
        let mut out: Vec<String> = vec![];
        for (_, n) in ordered {
            if !out.contains(n) && out.len() < r {
                out.push(n.clone());
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_the_naive_reference(
            nodes in proptest::collection::vec("[a-z0-9]{1,6}", 1..7),
            vnodes in 1usize..40,
            codes in proptest::collection::vec("[A-Za-z0-9]{1,10}", 1..30),
            r in 1usize..5,
        ) {
            let ring = Ring::new(&nodes, vnodes);
            for code in &codes {
                let got: Vec<String> = ring.holders(code, r).into_iter().map(String::from).collect();
                prop_assert_eq!(got, naive(&nodes, vnodes, code, r));
            }
        }
    }

    fn codes(n: usize) -> Vec<String> {
        (0..n).map(|i| String::from_utf8(crate::code::base62(i as u64 * 7919).to_vec()).unwrap()).collect()
    }

    #[test]
    fn adding_a_node_moves_about_one_in_n_keys() {
        let keys = codes(100_000);
        for n in [3usize, 4, 8] {
            let before: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let mut after = before.clone();
            after.push("newcomer".into());
            let (a, b) = (Ring::new(&before, 128), Ring::new(&after, 128));
            let moved = keys.iter().filter(|k| a.holders(k, 1) != b.holders(k, 1)).count();
            let share = moved as f64 / keys.len() as f64;
            let ideal = 1.0 / (n + 1) as f64;
            assert!((share - ideal).abs() < ideal * 0.25, "{n} -> {}: moved {share:.3}, ideal {ideal:.3}", n + 1);
            // Every key that moved went to the newcomer, and nothing else changed hands.
            assert!(keys.iter().all(|k| a.holders(k, 1) == b.holders(k, 1) || b.holders(k, 1) == ["newcomer"]));
            // With two holders, the newcomer only ever takes a place; the other holder stays.
            for k in keys.iter().take(5000) {
                let (old, new) = (a.holders(k, 2), b.holders(k, 2));
                assert!(new.iter().all(|x| old.contains(x) || *x == "newcomer"), "{k}: {old:?} -> {new:?}");
            }
        }
    }

    #[test]
    fn holders_are_distinct_and_balanced() {
        let nodes = ["a", "b", "c"];
        let ring = Ring::new(&nodes, 128);
        let keys = codes(30_000);
        let mut owned = [0usize; 3];
        for k in &keys {
            let h = ring.holders(k, 2);
            assert_eq!(h.len(), 2);
            assert_ne!(h[0], h[1]);
            owned[nodes.iter().position(|n| *n == h[0]).unwrap()] += 1;
        }
        for o in owned {
            assert!((7_000..13_000).contains(&o), "{owned:?}");
        }
        assert_eq!(ring.holders("x", 5).len(), 3);
        assert!(Ring::new::<&str>(&[], 8).holders("x", 2).is_empty());
    }
}
