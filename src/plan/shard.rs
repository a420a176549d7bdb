//! Splitting a test suite into shards balanced by each test's past duration — the pure part of
//! running a pytest suite across the fleet (issue #20's `testfleet pytest`).
//!
//! * [`collected`] reads `python -m pytest --collect-only -q`'s output: the test node ids
//!   (`tests/test_x.py::TestY::test_z[1]`), one per line, before the summary.
//! * [`junit_id`] is the id the same test gets in `test_results` — the `classname::name` of
//!   pytest's JUnit XML (`tests.test_x.TestY::test_z[1]`) — so past durations can be found for
//!   collected tests.
//! * [`pack`] deals the tests into shards longest first, each to the shard with the least
//!   total so far (the LPT rule: within 4/3 of the best split), a test never timed counting as
//!   the median of those that were, and no shard holding more than a given number of tests
//!   (a shard's node ids are its command line's arguments).

use std::collections::BTreeMap;

/// The test node ids in `pytest --collect-only -q` output, in order.
pub fn collected(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .filter(|line| line.contains("::"))
        .map(str::to_owned)
        .collect()
}

/// The JUnit id (`classname::name`) pytest reports for the test with node id `node`:
/// the file's path without `.py`, dots for slashes, classes appended, then `::` and the name.
pub fn junit_id(node: &str) -> String {
    // A parameter id (`[...]`) may hold anything, `::` included: keep it whole.
    let (path, params) = match node.find('[') {
        Some(at) => node.split_at(at),
        None => (node, ""),
    };
    let mut parts = path.split("::");
    let file = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let module = file
        .strip_suffix(".py")
        .unwrap_or(file)
        .replace(['/', '\\'], ".");
    match rest.split_last() {
        None => module + params,
        Some((name, classes)) => {
            let mut classname = module;
            for class in classes {
                classname.push('.');
                classname.push_str(class);
            }
            format!("{classname}::{name}{params}")
        }
    }
}

/// Deals `tests` (each with its past duration in ms, if known) into `shards` shards (more when
/// `shards` of `max_tests` each cannot hold them all), longest first onto the least loaded
/// shard that is not full. Returns the shards (none empty) with their estimated totals; tests
/// keep their collection order within a shard.
pub fn pack(
    tests: &[(String, Option<u64>)],
    shards: usize,
    max_tests: usize,
) -> Vec<(Vec<String>, u64)> {
    let max_tests = max_tests.max(1);
    let shards = shards
        .max(tests.len().div_ceil(max_tests))
        .clamp(1, tests.len().max(1));
    let mut known: Vec<u64> = tests.iter().filter_map(|(_, d)| *d).collect();
    known.sort_unstable();
    let guess = match known.len() {
        0 => 1000,
        n => known[n / 2].max(1),
    };
    let mut order: Vec<(usize, u64)> = tests
        .iter()
        .enumerate()
        .map(|(i, (_, d))| (i, d.unwrap_or(guess).max(1)))
        .collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut load = vec![0u64; shards];
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); shards];
    for (index, duration) in order {
        let lightest = (0..shards)
            .filter(|s| members[*s].len() < max_tests)
            .min_by_key(|s| (load[*s], *s))
            .expect("shards times max_tests holds every test");
        load[lightest] += duration;
        members[lightest].push(index);
    }
    members
        .into_iter()
        .zip(load)
        .filter(|(m, _)| !m.is_empty())
        .map(|(mut m, total)| {
            m.sort_unstable();
            (m.into_iter().map(|i| tests[i].0.clone()).collect(), total)
        })
        .collect()
}

/// Past durations by JUnit id, for the collected node ids: `(node id, duration)` pairs.
pub fn with_history(
    nodes: &[String],
    history: &BTreeMap<String, u64>,
) -> Vec<(String, Option<u64>)> {
    nodes
        .iter()
        .map(|n| (n.clone(), history.get(&junit_id(n)).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_only_output_gives_the_node_ids() {
        let out = "tests/test_a.py::test_one\ntests/test_a.py::TestB::test_two[x-1]\n\n\
                   2 tests collected in 0.01s\n";
        assert_eq!(
            collected(out),
            [
                "tests/test_a.py::test_one",
                "tests/test_a.py::TestB::test_two[x-1]"
            ]
        );
        assert!(collected("no tests ran in 0.01s\n").is_empty());
    }

    #[test]
    fn node_ids_map_to_the_ids_pytests_junit_xml_reports() {
        assert_eq!(
            junit_id("tests/test_a.py::test_one"),
            "tests.test_a::test_one"
        );
        assert_eq!(
            junit_id("pkg/tests/test_b.py::TestC::TestD::test_e[1-a::b]"),
            "pkg.tests.test_b.TestC.TestD::test_e[1-a::b]"
        );
        assert_eq!(junit_id("test_top.py::test_x"), "test_top::test_x");
    }

    #[test]
    fn longest_first_packing_balances_and_unknown_tests_count_as_the_median() {
        let tests: Vec<(String, Option<u64>)> = [
            ("a", Some(900)),
            ("b", Some(100)),
            ("c", Some(500)),
            ("d", Some(400)),
            ("e", None),
            ("f", Some(100)),
        ]
        .iter()
        .map(|(n, d)| (n.to_string(), *d))
        .collect();
        let shards = pack(&tests, 2, 100);
        assert_eq!(shards.len(), 2);
        let totals: Vec<u64> = shards.iter().map(|(_, t)| *t).collect();
        // 900 + 400 + 100 vs 500 + 400(e, the median) + 100 — within one test of even.
        assert_eq!(totals.iter().sum::<u64>(), 2400);
        assert!(
            totals.iter().all(|t| (1100..=1300).contains(t)),
            "{totals:?}"
        );
        let mut all: Vec<String> = shards.into_iter().flat_map(|(m, _)| m).collect();
        all.sort();
        assert_eq!(all, ["a", "b", "c", "d", "e", "f"]);
        // More shards than tests: one each, none empty.
        assert_eq!(pack(&tests[..2], 8, 100).len(), 2);
        assert!(pack(&[], 4, 100).is_empty());
    }

    #[test]
    fn no_shard_holds_more_than_max_tests_and_more_shards_are_made_when_needed() {
        // One long test and many short ones: by time alone the short ones would crowd into one
        // shard; the limit spreads them.
        let mut tests: Vec<(String, Option<u64>)> = vec![("long".into(), Some(10_000))];
        tests.extend((0..9).map(|i| (format!("short{i}"), Some(10))));
        let shards = pack(&tests, 2, 5);
        assert_eq!(shards.len(), 2);
        assert!(shards.iter().all(|(m, _)| m.len() <= 5), "{shards:?}");
        // Ten tests, at most three per shard: four shards even though two were asked for.
        let shards = pack(&tests, 2, 3);
        assert_eq!(shards.len(), 4);
        assert_eq!(shards.iter().map(|(m, _)| m.len()).sum::<usize>(), 10);
        assert!(shards.iter().all(|(m, _)| m.len() <= 3));
    }
}
