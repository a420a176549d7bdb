//! The renderers with hand-made data: every SVG parses, names what it must and has one mark
//! per fact; every PNG decodes at the SVG's size with its text drawn; every text rendering
//! says what it must within 100 columns.

use resvg::tiny_skia::Pixmap;
use serde_json::json;

use super::*;

/// 2026-05-12T10:00:00Z.
const T0: i64 = 1_778_580_000_000_000;
const S: i64 = 1_000_000;

fn cluster() -> ClusterPicture {
    let node = |id: u64, role: &str, term: Option<u64>| NodeBox {
        id: Some(id),
        address: format!("127.0.0.1:{}", 7000 + id),
        role: role.to_string(),
        is_leader: role == "leader",
        term,
        error: (role == "unreachable").then(|| "connection refused".to_string()),
    };
    let worker = |id: &str, status: &str, drained: bool| WorkerBox {
        id: id.to_string(),
        status: status.to_string(),
        drained,
    };
    ClusterPicture {
        generated_at_us: T0 + 600 * S,
        leader_id: Some(2),
        term: 7,
        nodes: vec![
            node(1, "follower", Some(7)),
            node(2, "leader", Some(7)),
            node(3, "unreachable", None),
        ],
        workers: vec![
            worker("w-a", "healthy", false),
            worker("w-b", "healthy", true),
            worker("w-<c&d>", "failed", false),
            worker("w-e", "draining", false),
        ],
    }
}

fn health() -> HealthPicture {
    let series = |node_id: u64, phase: f64| HealthSeries {
        node_id,
        points: (0..40)
            .map(|i| HealthPoint {
                at_us: T0 + i * 10 * S,
                cpu: 0.2 + 0.1 * ((i as f64 + phase) / 5.0).sin(),
                mem_bytes: (100 + i) << 20,
                disk_free_bytes: 50 << 30,
                net_errors: i % 3,
                error_rate: if i == 20 { 2.5 } else { 0.0 },
            })
            .collect(),
    };
    HealthPicture {
        generated_at_us: T0 + 400 * S,
        series: vec![series(1, 0.0), series(2, 1.0), series(3, 2.0)],
    }
}

/// Rows as `leaders::sql` returns them: four elections, the first without a predecessor, the
/// third's predecessor without a sample.
fn leader_rows() -> Vec<Vec<serde_json::Value>> {
    vec![
        vec![
            json!(1),
            json!(1),
            json!(T0),
            json!(null),
            json!(null),
            json!(4),
        ],
        vec![
            json!(2),
            json!(2),
            json!(T0 + 120 * S),
            json!(1),
            json!(T0 + 117 * S),
            json!(4),
        ],
        vec![
            json!(3),
            json!(3),
            json!(T0 + 300 * S),
            json!(2),
            json!(null),
            json!(4),
        ],
        vec![
            json!(5),
            json!(2),
            json!(T0 + 420 * S),
            json!(3),
            json!(T0 + 419 * S),
            json!(4),
        ],
    ]
}

fn leaders() -> LeaderPicture {
    LeaderPicture::from_rows(&leader_rows(), T0 + 600 * S).unwrap()
}

/// Rows as `recovery::sql` returns them (newest first).
fn recovery_rows() -> Vec<Vec<serde_json::Value>> {
    let row = |scope: &str,
               subject: &str,
               at: i64,
               attempt: Option<i64>,
               ok: bool,
               ty: &str,
               total: i64| {
        vec![
            json!(scope),
            json!(subject),
            json!(T0 + at * S),
            attempt.map_or(json!(null), |a| json!(a)),
            json!(ok),
            json!(ty),
            json!(if ok { "" } else { "worker did not come back" }),
            json!(total),
        ]
    };
    vec![
        row("worker", "w-a", 300, Some(2), true, "restart", 3),
        row("system", "system", 250, None, true, "episode", 1),
        row("task", "3f2a-task", 200, Some(1), true, "requeue", 2),
        row("task", "9b1c-task", 200, Some(1), true, "requeue", 2),
        row("worker", "w-a", 150, Some(1), false, "reconnect", 3),
        row("worker", "w-b", 100, Some(1), true, "reconnect", 3),
    ]
}

fn recovery() -> RecoveryPicture {
    RecoveryPicture::from_rows(&recovery_rows(), T0 + 600 * S).unwrap()
}

fn all() -> Vec<Picture> {
    vec![
        Picture::Cluster(cluster()),
        Picture::Health(health()),
        Picture::Leaders(leaders()),
        Picture::Recovery(recovery()),
    ]
}

fn empty() -> Vec<Picture> {
    vec![
        Picture::Cluster(ClusterPicture {
            generated_at_us: T0,
            leader_id: None,
            term: 0,
            nodes: vec![],
            workers: vec![],
        }),
        Picture::Health(HealthPicture::from_rows(&[], T0).unwrap()),
        Picture::Leaders(LeaderPicture::from_rows(&[], T0).unwrap()),
        Picture::Recovery(RecoveryPicture::from_rows(&[], T0).unwrap()),
    ]
}

/// Occurrences of `class="name"` in an SVG.
fn marks(svg: &str, class: &str) -> usize {
    svg.matches(&format!("class=\"{class}\"")).count()
}

/// The SVG without its `<text>` elements.
fn without_text(svg: &str) -> String {
    let mut out = String::new();
    let mut rest = svg;
    while let Some(start) = rest.find("<text") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</text>") {
            Some(end) => rest = &rest[start + end + "</text>".len()..],
            None => break,
        }
    }
    out.push_str(rest);
    out
}

fn decode(png: &[u8]) -> Pixmap {
    Pixmap::decode_png(png).expect("a valid PNG")
}

#[test]
fn every_svg_parses_and_every_png_has_its_size_and_drawn_text() {
    for picture in all().into_iter().chain(empty()) {
        let svg = picture.svg();
        let tree = raster::parse(&svg).unwrap_or_else(|e| panic!("{:?}: {e}", picture.kind()));
        let size = tree.size().to_int_size();
        let png = decode(&picture.png().unwrap());
        assert_eq!((png.width(), png.height()), (size.width(), size.height()));
        assert!(
            png.width() >= 900 && png.height() >= 100,
            "{:?}",
            picture.kind()
        );
        // The text is really drawn: the same picture without its text differs in many pixels.
        let bare = decode(&raster::png(&without_text(&svg)).unwrap());
        let differing = png
            .pixels()
            .iter()
            .zip(bare.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            differing > 2000,
            "{:?}: text changed only {differing} pixels",
            picture.kind()
        );
    }
}

#[test]
fn every_text_rendering_fits_100_columns() {
    for picture in all().into_iter().chain(empty()) {
        let text = picture.text();
        assert!(!text.is_empty());
        for line in text.lines() {
            assert!(
                line.chars().count() <= 100,
                "{:?}: {line:?}",
                picture.kind()
            );
        }
    }
}

#[test]
fn render_gives_each_format() {
    let picture = Picture::Leaders(leaders());
    assert!(picture.render(Format::Svg).unwrap().starts_with(b"<svg"));
    assert!(picture.render(Format::Png).unwrap().starts_with(b"\x89PNG"));
    assert!(
        String::from_utf8(picture.render(Format::Text).unwrap())
            .unwrap()
            .starts_with("Leader")
    );
    assert_eq!(
        Kind::ALL.map(Kind::file_stem),
        [
            "cluster_status",
            "health_metrics",
            "leader_transitions",
            "recovery_timeline"
        ]
    );
}

#[test]
fn the_cluster_picture_shows_the_leader_the_nodes_and_the_workers_by_status() {
    let picture = cluster();
    let svg = picture.svg();
    assert_eq!(marks(&svg, "node"), 3);
    assert_eq!(svg.matches("data-leader=\"true\"").count(), 1);
    assert!(
        svg.contains("<g class=\"node\" data-id=\"2\" data-role=\"leader\" data-leader=\"true\">")
    );
    assert!(svg.contains("★ node 2 — leader"));
    assert!(svg.contains("data-id=\"3\" data-role=\"unreachable\""));
    // The leader replicates to the two others.
    assert_eq!(marks(&svg, "edge"), 2);
    assert_eq!(marks(&svg, "worker"), 4);
    assert!(svg.contains("data-status=\"healthy\" data-count=\"2\""));
    assert!(svg.contains("w-&lt;c&amp;d&gt;"));
    // Statuses in their order: healthy, draining, failed.
    let at = |s: &str| {
        svg.find(&format!("worker-group\" data-status=\"{s}\""))
            .unwrap()
    };
    assert!(at("healthy") < at("draining") && at("draining") < at("failed"));

    let text = picture.text();
    assert!(
        text.contains("Leader: node 2 (127.0.0.1:7002), term 7"),
        "{text}"
    );
    assert!(
        text.contains("Workers (4): healthy 2, draining 1, failed 1"),
        "{text}"
    );
    assert!(text.contains("  healthy (2): w-a, w-b (drained)"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with('*') && l.contains("leader")),
        "{text}"
    );
}

#[test]
fn the_health_picture_charts_every_coordinator() {
    let picture = health();
    let svg = picture.svg();
    for label in [
        "node 1",
        "node 2",
        "node 3",
        "cpu (cores)",
        "memory (MiB)",
        "errors per second",
    ] {
        assert!(svg.contains(label), "{label} missing");
    }
    // One line per coordinator per charted metric, in the coordinator's colour, and its
    // legend entry.
    for colour in ["#1F77B4", "#FF7F0E", "#2CA02C"] {
        let lines = svg
            .lines()
            .filter(|l| l.contains("<polyline") && l.to_uppercase().contains(colour))
            .count();
        assert_eq!(lines, 4 * 2, "{colour}");
    }

    let text = picture.text();
    assert_eq!(text.matches("\nnode ").count(), 3, "{text}");
    assert!(text.contains("node 2: 40 samples"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("  memory (MiB)") && l.contains('█')),
        "{text}"
    );
}

#[test]
fn health_rows_become_one_series_per_node() {
    let rows = vec![
        vec![
            json!(1),
            json!(T0),
            json!(0.5),
            json!(1 << 20),
            json!(1 << 30),
            json!(0),
            json!(0.0),
        ],
        vec![
            json!(1),
            json!(T0 + S),
            json!(0.7),
            json!(2 << 20),
            json!(1 << 30),
            json!(1),
            json!(0.1),
        ],
        vec![
            json!(2),
            json!(T0),
            json!("NaN"),
            json!(3 << 20),
            json!(1 << 30),
            json!(0),
            json!(0.0),
        ],
    ];
    let picture = HealthPicture::from_rows(&rows, T0 + 2 * S).unwrap();
    assert_eq!(picture.series.len(), 2);
    assert_eq!(picture.series[0].points.len(), 2);
    assert_eq!(picture.series[0].points[1].cpu, 0.7);
    assert_eq!(picture.series[1].points[0].cpu, 0.0, "NaN is charted as 0");
    let bad = vec![vec![json!("x")]];
    assert!(matches!(
        HealthPicture::from_rows(&bad, T0),
        Err(VizError::Row { .. })
    ));
}

#[test]
fn leader_rows_give_transitions_with_failover_gaps() {
    let picture = leaders();
    assert_eq!(picture.transitions.len(), 4);
    assert_eq!(picture.total, 4);
    let gaps: Vec<Option<i64>> = picture
        .transitions
        .iter()
        .map(Transition::failover_gap_us)
        .collect();
    assert_eq!(gaps, [None, Some(3 * S), None, Some(S)]);
    assert_eq!(picture.current().map(|t| (t.leader, t.term)), Some((2, 5)));
}

#[test]
fn the_leader_picture_has_one_mark_per_election() {
    let picture = leaders();
    let svg = picture.svg();
    assert_eq!(marks(&svg, "transition"), 4);
    assert_eq!(marks(&svg, "term"), 4);
    assert_eq!(marks(&svg, "gap"), 2);
    for term in [1, 2, 3, 5] {
        assert!(svg.contains(&format!("class=\"transition\" data-term=\"{term}\"")));
    }
    assert!(svg.contains("current leader: node 2 (term 5)"));
    assert!(svg.contains("at most 3.0 s without a leader (node 1 last seen"));

    let text = picture.text();
    assert!(
        text.contains("4 elections; current leader: node 2 (term 5)"),
        "{text}"
    );
    // The timeline marks each election with the new leader's id.
    let line = text.lines().find(|l| l.starts_with("elections")).unwrap();
    let digits: String = line.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits, "1232", "{line}");
    // The table: newest first, gaps as upper bounds, the previous term's length.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(['1', '2', '3', '5']))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(
        rows[0].starts_with("5 ") && rows[0].contains("<= 1.0 s") && rows[0].contains("2 min 0 s")
    );
    assert!(rows[3].starts_with("1 "));
}

#[test]
fn the_recovery_picture_marks_every_decision_by_type_and_outcome() {
    let picture = recovery();
    assert_eq!(picture.events.len(), 6);
    assert!(
        picture.events.windows(2).all(|w| w[0].at_us <= w[1].at_us),
        "oldest first"
    );
    let svg = picture.svg();
    assert_eq!(marks(&svg, "event"), 6);
    assert_eq!(svg.matches("data-success=\"false\"").count(), 1);
    assert_eq!(svg.matches("data-scope=\"task\"").count(), 2);
    assert!(svg.contains("data-scope=\"system\" data-type=\"episode\""));
    for lane in ["worker w-a", "worker w-b", "tasks", "system"] {
        assert!(svg.contains(&format!(">{lane}</text>")), "{lane}");
    }
    assert!(svg.contains("6 recovery decisions (worker 3, task 2, system 1)"));

    let text = picture.text();
    assert!(
        text.contains("6 recovery decisions (worker 3, task 2, system 1)"),
        "{text}"
    );
    let lane = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_string()
    };
    assert!(lane("worker w-a").contains('×') && lane("worker w-a").contains('●'));
    assert_eq!(
        lane("tasks").matches('●').count(),
        1,
        "two decisions at one time share a cell"
    );
    assert!(text.contains("worker  reconnect"), "{text}");
    assert!(text.contains("worker did not come back"));
}

#[test]
fn a_row_of_an_unknown_scope_is_an_error() {
    let mut rows = recovery_rows();
    rows[0][0] = json!("galaxy");
    let e = RecoveryPicture::from_rows(&rows, T0).unwrap_err();
    assert!(e.to_string().contains("unknown scope \"galaxy\""), "{e}");
}

/// Writes every picture of the hand-made data to `$VIZ_SAMPLES` (a directory), to look at.
#[test]
fn write_samples_when_asked() {
    let Some(dir) = std::env::var_os("VIZ_SAMPLES") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for picture in all() {
        for format in [Format::Svg, Format::Png, Format::Text] {
            let name = format!("{}.{}", picture.kind().file_stem(), format.extension());
            std::fs::write(dir.join(name), picture.render(format).unwrap()).unwrap();
        }
    }
}

#[test]
fn spans_read_well() {
    assert_eq!(span(850_000), "850 ms");
    assert_eq!(span(2_400_000), "2.4 s");
    assert_eq!(span(185 * S), "3 min 5 s");
    assert_eq!(span(7800 * S), "2 h 10 min");
    assert_eq!(span(-5), "0 ms");
}
