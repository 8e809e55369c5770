//! The page: one self-contained HTML document (inline CSS, inline SVG, no script, no external
//! resource) built section by section, and the escaping every piece of run text goes through.
//!
//! Invariants: every string that came from a run (item text, reasons, paths, ids) passes through
//! [`escape`] before it is written; the page loads nothing from the network; it prints on A4 or
//! letter paper without cutting a chart in two.

use crate::report::chart::Figure;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0 auto; max-width: 1060px; padding: 24px; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 1.8em; }
h3 { margin-bottom: 0.3em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; font-size: 0.9em; }
dl.meta dt { color: #555; } dl.meta dd { margin: 0; font-family: ui-monospace, monospace;
  overflow-wrap: anywhere; }
figure.chart { margin: 16px 0; padding: 8px; border: 1px solid #e3e3e3; border-radius: 6px;
  break-inside: avoid; page-break-inside: avoid; }
figure.chart svg { max-width: 100%; height: auto; display: block; }
figure.chart figcaption { font-size: 0.9em; color: #333; margin-bottom: 6px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
.grid figure.chart { margin: 0; }
table { border-collapse: collapse; font-size: 0.88em; margin: 8px 0 16px; width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.empty { background: #fff6e0; border-left: 4px solid #e69f00; padding: 8px 12px; }
p.note { color: #444; font-size: 0.9em; }
.item { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; margin: 10px 0;
  break-inside: avoid; page-break-inside: avoid; }
.item .tag { display: inline-block; background: #eef3f8; border-radius: 4px; padding: 0 6px;
  margin-right: 4px; font-size: 0.85em; }
.item.rejected .tag.stage { background: #fde8dc; }
.item pre, td pre { white-space: pre-wrap; font-family: inherit; margin: 4px 0; }
footer { margin-top: 3em; font-size: 0.8em; color: #666; }
@media print { body { max-width: none; padding: 0; font-size: 10pt; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  .grid { grid-template-columns: 1fr 1fr; gap: 8px; } .grid figure.chart { margin: 0; }
  .grid figcaption { font-size: 0.8em; } details > summary { list-style: none; } }
"#;

/// A page being built.
#[derive(Debug, Default)]
pub struct Page {
    title: String,
    body: String,
}

impl Page {
    pub fn new(title: &str) -> Self {
        Page {
            title: title.to_string(),
            body: String::new(),
        }
    }

    /// The run's facts as a definition list (values escaped).
    pub fn meta(&mut self, rows: &[(&str, String)]) {
        self.body.push_str("<dl class=\"meta\">\n");
        for (k, v) in rows {
            self.body
                .push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", escape(k), escape(v)));
        }
        self.body.push_str("</dl>\n");
    }

    pub fn h2(&mut self, text: &str, id: &str) {
        self.body.push_str(&format!(
            "<h2 id=\"{}\">{}</h2>\n",
            escape(id),
            escape(text)
        ));
    }

    pub fn h3(&mut self, text: &str) {
        self.body.push_str(&format!("<h3>{}</h3>\n", escape(text)));
    }

    pub fn p(&mut self, text: &str) {
        self.body
            .push_str(&format!("<p class=\"note\">{}</p>\n", escape(text)));
    }

    /// A sentence saying there is nothing to draw, and why.
    pub fn empty(&mut self, text: &str) {
        self.body
            .push_str(&format!("<p class=\"empty\">{}</p>\n", escape(text)));
    }

    pub fn figure(&mut self, f: &Figure) {
        self.body.push_str(&figure_html(f));
    }

    /// Narrow figures (box plots, histograms) side by side, two to a row in print too.
    pub fn grid(&mut self, figures: &[Figure]) {
        self.body.push_str("<div class=\"grid\">\n");
        for f in figures {
            self.body.push_str(&figure_html(f));
        }
        self.body.push_str("</div>\n");
    }

    /// A table; `head` and every cell are escaped; cells that parse as numbers align right.
    pub fn table(&mut self, head: &[&str], rows: &[Vec<String>]) {
        let mut s = String::from("<table>\n<thead><tr>");
        for h in head {
            s.push_str(&format!("<th>{}</th>", escape(h)));
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for row in rows {
            s.push_str("<tr>");
            for cell in row {
                let numeric = !cell.is_empty()
                    && cell
                        .trim_end_matches('%')
                        .replace(['[', ']', ',', ' '], "")
                        .parse::<f64>()
                        .is_ok();
                let class = if numeric { " class=\"num\"" } else { "" };
                s.push_str(&format!("<td{class}>{}</td>", escape(cell)));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody></table>\n");
        self.body.push_str(&s);
    }

    /// Markup built by the caller; every run string in it must already be escaped.
    pub fn raw(&mut self, html: &str) {
        self.body.push_str(html);
    }

    /// The whole document.
    pub fn finish(self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{body}\
             <footer>Made by ares {version}. One self-contained file: no scripts, no network; \
             every chart's plotted numbers are in its <code>data-values</code> attribute.</footer>\n\
             </body>\n</html>\n",
            title = escape(&self.title),
            body = self.body,
            version = env!("CARGO_PKG_VERSION"),
        )
    }
}

/// A figure: caption, then the SVG with a `<title>` for screen readers and tooltips.
fn figure_html(f: &Figure) -> String {
    let svg = f.svg.find("<svg").map_or(f.svg.as_str(), |i| &f.svg[i..]);
    let svg = match svg.find('>') {
        Some(end) => format!(
            "{} role=\"img\">\n<title>{}</title>{}",
            &svg[..end].trim_end_matches('/'),
            escape(&f.title),
            &svg[end + 1..]
        ),
        None => svg.to_string(),
    };
    format!(
        "<figure class=\"chart\" id=\"fig-{id}\" data-chart=\"{id}\" data-values=\"{data}\">\n\
         <figcaption><strong>{title}.</strong> {caption}</figcaption>\n{svg}</figure>\n",
        id = escape(&f.id),
        data = escape(&f.data.to_string()),
        title = escape(&f.title),
        caption = escape(&f.caption),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<b a="1">'x' & y</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;x&#39; &amp; y&lt;/b&gt;"
        );
    }

    #[test]
    fn run_text_in_a_table_is_escaped() {
        let mut p = Page::new("t<i>");
        p.table(&["q"], &[vec!["<script>alert(1)</script>".into()]]);
        let html = p.finish();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("<title>t&lt;i&gt;</title>"));
    }
}
