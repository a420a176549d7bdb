//! SVG to PNG with resvg, and the one font every picture is drawn and measured with.
//!
//! The font is DejaVu Sans (`assets/fonts/DejaVuSans.ttf`, license beside it), compiled in.
//! resvg gets a font database holding only that font, with every generic family
//! (`sans-serif`, `serif`, `monospace`…) mapped to it, so whatever family an SVG names, its
//! text is drawn with DejaVu Sans and no system font is ever looked for. plotters gets the
//! same bytes for measuring text ([`register_plotters_font`]).

use std::sync::{Arc, OnceLock};

use resvg::tiny_skia;
use resvg::usvg::{self, fontdb};

use super::VizError;

/// DejaVu Sans 2.37, as Debian's `fonts-dejavu-core` ships it.
pub static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family name inside [`FONT`].
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// The largest picture rasterised, per side, in pixels (a bug, not a big cluster, gets there).
const MAX_SIDE: u32 = 8192;

/// The font database: [`FONT`] and nothing else.
pub fn fonts() -> Arc<fontdb::Database> {
    static FONTS: OnceLock<Arc<fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = fontdb::Database::new();
            db.load_font_data(FONT.to_vec());
            db.set_sans_serif_family(FONT_FAMILY);
            db.set_serif_family(FONT_FAMILY);
            db.set_monospace_family(FONT_FAMILY);
            db.set_cursive_family(FONT_FAMILY);
            db.set_fantasy_family(FONT_FAMILY);
            Arc::new(db)
        })
        .clone()
}

/// Lets plotters measure text set in `sans-serif` with [`FONT`]; once per process.
pub fn register_plotters_font() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The bytes are a valid font (a test renders with them), so this cannot fail; were it
        // to, plotters would report a font error when it lays out text, not panic.
        let _ =
            plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT);
    });
}

/// Parses an SVG document with the embedded font.
pub fn parse(svg: &str) -> Result<usvg::Tree, VizError> {
    let options = usvg::Options {
        font_family: FONT_FAMILY.to_string(),
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    usvg::Tree::from_str(svg, &options).map_err(|e| VizError::Render(format!("bad SVG: {e}")))
}

/// Rasterises an SVG document at its own size onto white; the PNG file's bytes.
pub fn png(svg: &str) -> Result<Vec<u8>, VizError> {
    let tree = parse(svg)?;
    let size = tree.size().to_int_size();
    if size.width() > MAX_SIDE || size.height() > MAX_SIDE {
        return Err(VizError::Render(format!(
            "the picture is {}×{} pixels, over the {MAX_SIDE} limit",
            size.width(),
            size.height()
        )));
    }
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| VizError::Render("the picture has no area".to_string()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| VizError::Render(format!("cannot encode the PNG: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixels of a decoded PNG that are not white.
    fn inked(png: &[u8]) -> usize {
        let pixmap = tiny_skia::Pixmap::decode_png(png).expect("a PNG");
        pixmap
            .pixels()
            .iter()
            .filter(|p| (p.red(), p.green(), p.blue()) != (255, 255, 255))
            .count()
    }

    fn page(body: &str) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"200\" height=\"40\">\
             <rect width=\"200\" height=\"40\" fill=\"white\"/>{body}</svg>"
        )
    }

    #[test]
    fn the_database_holds_only_the_embedded_font() {
        let db = fonts();
        assert_eq!(db.len(), 1);
        let face = db.faces().next().expect("one face");
        assert_eq!(face.families[0].0, FONT_FAMILY);
    }

    #[test]
    fn text_is_drawn_with_the_embedded_font_whatever_family_is_named() {
        let blank = inked(&png(&page("")).unwrap());
        assert_eq!(blank, 0);
        for family in [
            "sans-serif",
            "serif",
            "monospace",
            "Nonexistent Font",
            "DejaVu Sans",
        ] {
            let with_text = png(&page(&format!(
                "<text x=\"10\" y=\"28\" font-size=\"20\" font-family=\"{family}\">leader 2</text>"
            )))
            .unwrap();
            let ink = inked(&with_text);
            // "leader 2" at 20 px covers a few hundred pixels; a missing font draws none.
            assert!(ink > 200, "{family}: only {ink} pixels inked");
        }
    }

    #[test]
    fn a_png_has_the_svg_size_and_a_bad_svg_is_an_error() {
        let bytes = png(&page("<circle cx=\"20\" cy=\"20\" r=\"10\" fill=\"red\"/>")).unwrap();
        let pixmap = tiny_skia::Pixmap::decode_png(&bytes).unwrap();
        assert_eq!((pixmap.width(), pixmap.height()), (200, 40));
        assert!(matches!(png("<svg"), Err(VizError::Render(_))));
    }
}
