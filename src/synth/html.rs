//! HTML reduced to text, streaming: a small state machine fed one line at a time (so a huge page
//! is never held whole). Tags are dropped; `<script>`, `<style>`, `<head>`, `<noscript>` and
//! `<template>` are dropped with their content; comments and doctypes are dropped; block-level
//! tags (`p`, `div`, `h1`-`h6`, `li`, `tr`, `br`, `section`, ...) become blank lines so that
//! paragraphs survive; character references (`&amp;`, `&#233;`, `&#xE9;`, and the common named
//! ones) are decoded.
//!
//! Why not an HTML parser crate: synth only needs the visible text in reading order, which this
//! gets without building a tree, and it keeps memory bounded by the longest tag.

/// Elements whose content is not text a reader sees.
const HIDDEN: [&str; 5] = ["script", "style", "head", "noscript", "template"];

/// Elements that start a new paragraph.
const BLOCK: [&str; 28] = [
    "p",
    "div",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "pre",
    "dd",
    "dt",
    "dl",
    "title",
    "main",
    "nav",
    "aside",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// Inside `<...>`; the tag text so far is in `tag`.
    Tag,
    /// Inside `<!-- ... -->`.
    Comment,
}

/// Streaming HTML-to-text state.
#[derive(Debug, Clone)]
pub struct HtmlReducer {
    state: State,
    tag: String,
    /// Inside a hidden element: its name (text is dropped until its closing tag).
    hidden: Option<String>,
    /// An entity being read (`&...;`), carried across lines.
    entity: Option<String>,
}

impl Default for HtmlReducer {
    fn default() -> Self {
        Self::new()
    }
}

/// The text for a character reference body (without `&` and `;`), if known.
fn decode_entity(name: &str) -> Option<String> {
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "copy" => '©',
        "reg" => '®',
        "deg" => '°',
        "times" => '×',
        "eacute" => 'é',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some(c.to_string())
}

impl HtmlReducer {
    pub fn new() -> Self {
        HtmlReducer {
            state: State::Text,
            tag: String::new(),
            hidden: None,
            entity: None,
        }
    }

    /// Feeds one line (without its newline); returns the text it produced, with `\n\n` where a
    /// block element starts or ends.
    pub fn feed(&mut self, line: &str) -> String {
        let mut out = String::new();
        for c in line.chars() {
            self.step(c, &mut out);
        }
        // The line break itself is whitespace in HTML.
        self.step(' ', &mut out);
        out
    }

    /// Flushes what is pending at the end of the document.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if let Some(e) = self.entity.take() {
            out.push('&');
            out.push_str(&e);
        }
        out
    }

    fn step(&mut self, c: char, out: &mut String) {
        match self.state {
            State::Comment => {
                self.tag.push(c);
                if self.tag.ends_with("-->") {
                    self.tag.clear();
                    self.state = State::Text;
                }
            }
            State::Tag => {
                if c == '>' {
                    let tag = std::mem::take(&mut self.tag);
                    self.state = State::Text;
                    self.end_tag(&tag, out);
                } else {
                    self.tag.push(c);
                    if self.tag == "!--" {
                        self.state = State::Comment;
                        self.tag.clear();
                    } else if self.tag.len() > 4096 {
                        // Not a tag after all (a stray '<' in text): drop it.
                        self.tag.clear();
                        self.state = State::Text;
                    }
                }
            }
            State::Text => {
                if let Some(e) = self.entity.as_mut() {
                    if c == ';' {
                        let name = std::mem::take(e);
                        self.entity = None;
                        match decode_entity(&name) {
                            Some(t) => self.text(&t, out),
                            None => self.text(&format!("&{name};"), out),
                        }
                        return;
                    }
                    if (c.is_ascii_alphanumeric() || c == '#') && e.len() < 12 {
                        e.push(c);
                        return;
                    }
                    let name = std::mem::take(e);
                    self.entity = None;
                    self.text(&format!("&{name}"), out);
                }
                match c {
                    '<' => self.state = State::Tag,
                    '&' => self.entity = Some(String::new()),
                    _ => self.text(&c.to_string(), out),
                }
            }
        }
    }

    fn text(&self, t: &str, out: &mut String) {
        if self.hidden.is_none() {
            out.push_str(t);
        }
    }

    fn end_tag(&mut self, tag: &str, out: &mut String) {
        let tag = tag.trim();
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(h) = &self.hidden {
            if closing && *h == name {
                self.hidden = None;
            }
            return;
        }
        if !closing && HIDDEN.contains(&name.as_str()) && !tag.ends_with('/') {
            self.hidden = Some(name);
            return;
        }
        if BLOCK.contains(&name.as_str()) {
            out.push_str("\n\n");
        } else if matches!(name.as_str(), "td" | "th") && closing {
            out.push_str(" | ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduce(lines: &[&str]) -> String {
        let mut r = HtmlReducer::new();
        let mut out: String = lines.iter().map(|l| r.feed(l)).collect();
        out.push_str(&r.finish());
        out
    }

    #[test]
    fn tags_scripts_and_comments_go_text_and_entities_stay() {
        let t = reduce(&[
            "<html><head><title>T</title><style>p{}</style></head>",
            "<body><p>Fish &amp; chips &#233;t&eacute; <b>bold</b></p><!-- a",
            "comment --><script>var x = '<p>';</script><p>Second",
            "line &unknown; 3 &lt; 4</p></body></html>",
        ]);
        let paras: Vec<String> = t
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .collect();
        assert_eq!(
            paras,
            ["Fish & chips été bold", "Second line &unknown; 3 < 4"]
        );
    }
}
