//! Text: counting, keywords, case, slugs, regular expressions, hashing, base64.

use crate::FileGuard;
use crate::{num, Args, Function};
use gleitzeit_core::GzError;
use serde_json::{json, Map, Value};
use sha2::Digest;
use std::collections::{HashMap, HashSet};

type Res = Result<Value, GzError>;

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "count_words",
        category: "text",
        description: "Counts words (whitespace-separated), characters, characters without whitespace, \
                      lines, sentences and distinct words (case-insensitive) in a text.",
        args: &[arg!("text", String, required, "The text to count")],
        returns: "object {words, characters, characters_no_spaces, lines, sentences, unique_words}",
        example: "gleitzeit run --function count_words --args text=\"The cat sat. The dog ran!\"",
        blocking: false,
        run: count_words,
    },
    Function {
        name: "extract_keywords",
        category: "text",
        description: "The most frequent words of a text, ignoring common English stop words and words \
                      shorter than 3 letters; ties keep the order of first appearance.",
        args: &[
            arg!("text", String, required, "The text to analyse"),
            arg!("max_keywords", Integer, default "5", "How many keywords to return at most"),
        ],
        returns: "list of strings",
        example: "gleitzeit run --function extract_keywords --args text=\"Rust makes Rust programs fast\" max_keywords=3",
        blocking: false,
        run: extract_keywords,
    },
    Function {
        name: "word_frequency",
        category: "text",
        description: "How often each word occurs (lower-cased), most frequent first; ties keep the order \
                      of first appearance.",
        args: &[
            arg!("text", String, required, "The text to analyse"),
            arg!("top", Integer, optional, "Return only the N most frequent words"),
            arg!("ignore_stop_words", Boolean, default "false", "Leave out common English stop words"),
        ],
        returns: "object {word: count}",
        example: "gleitzeit run --function word_frequency --args text=\"a b a c a b\" top=2",
        blocking: false,
        run: word_frequency,
    },
    Function {
        name: "text_stats",
        category: "text",
        description: "Readability statistics of a text: words, sentences, paragraphs, average word and \
                      sentence length, the longest word and the reading time at 200 words per minute.",
        args: &[arg!("text", String, required, "The text to analyse")],
        returns: "object {characters, words, sentences, paragraphs, average_word_length, \
                  average_sentence_length, longest_word, reading_time_minutes}",
        example: "gleitzeit run --function text_stats --args text=\"One two three. Four five.\"",
        blocking: false,
        run: text_stats,
    },
    Function {
        name: "uppercase",
        category: "text",
        description: "The text in upper case (Unicode-aware).",
        args: &[arg!("text", String, required, "The text to convert")],
        returns: "string",
        example: "gleitzeit run --function uppercase --args text=\"hello world\"",
        blocking: false,
        run: uppercase,
    },
    Function {
        name: "lowercase",
        category: "text",
        description: "The text in lower case (Unicode-aware).",
        args: &[arg!("text", String, required, "The text to convert")],
        returns: "string",
        example: "gleitzeit run --function lowercase --args text=\"Hello World\"",
        blocking: false,
        run: lowercase,
    },
    Function {
        name: "reverse_text",
        category: "text",
        description: "The text with its characters in reverse order.",
        args: &[arg!("text", String, required, "The text to reverse")],
        returns: "string",
        example: "gleitzeit run --function reverse_text --args text=stressed",
        blocking: false,
        run: reverse_text,
    },
    Function {
        name: "slugify",
        category: "text",
        description: "A URL-friendly slug: lower-case letters and digits joined by a separator.",
        args: &[
            arg!("text", String, required, "The text to turn into a slug"),
            arg!("separator", String, default "\"-\"", "What joins the words"),
        ],
        returns: "string",
        example: "gleitzeit run --function slugify --args text=\"Hello, World! 2024\"",
        blocking: false,
        run: slugify,
    },
    Function {
        name: "truncate",
        category: "text",
        description: "Shortens a text to at most `length` characters, ending with `suffix` when it was cut.",
        args: &[
            arg!("text", String, required, "The text to shorten"),
            arg!("length", Integer, required, "Maximum length in characters, suffix included"),
            arg!("suffix", String, default "\"...\"", "Appended when the text is cut"),
        ],
        returns: "string",
        example: "gleitzeit run --function truncate --args text=\"A long sentence here\" length=10",
        blocking: false,
        run: truncate,
    },
    Function {
        name: "regex_extract",
        category: "text",
        description: "All matches of a regular expression (Rust regex syntax) in a text, or of one \
                      capture group of it.",
        args: &[
            arg!("text", String, required, "The text to search"),
            arg!("pattern", String, required, "The regular expression, e.g. \\d+ or (\\w+)@"),
            arg!("group", Integer, default "0", "Capture group to return; 0 is the whole match"),
        ],
        returns: "list of strings",
        example: "gleitzeit run --function regex_extract --args text=\"a1 b22 c333\" pattern=\"\\d+\"",
        blocking: false,
        run: regex_extract,
    },
    Function {
        name: "split_text",
        category: "text",
        description: "Splits a text at a separator (empty separator: into characters).",
        args: &[
            arg!("text", String, required, "The text to split"),
            arg!("separator", String, default "\",\"", "Where to split"),
            arg!("trim", Boolean, default "true", "Trim whitespace around parts and drop empty ones"),
        ],
        returns: "list of strings",
        example: "gleitzeit run --function split_text --args text=\"a, b, c\" separator=,",
        blocking: false,
        run: split_text,
    },
    Function {
        name: "replace_text",
        category: "text",
        description: "Replaces every occurrence of `find` in a text with `replace`.",
        args: &[
            arg!("text", String, required, "The text to change"),
            arg!("find", String, required, "The text to look for (not empty)"),
            arg!("replace", String, default "\"\"", "What to put instead"),
        ],
        returns: "string",
        example: "gleitzeit run --function replace_text --args text=\"hello world\" find=world replace=there",
        blocking: false,
        run: replace_text,
    },
    Function {
        name: "hash_text",
        category: "text",
        description: "The hexadecimal SHA-2 digest of a text (UTF-8): sha256 (default), sha224, sha384 or sha512.",
        args: &[
            arg!("text", String, required, "The text to hash"),
            arg!("algorithm", String, default "\"sha256\"", "sha224, sha256, sha384 or sha512"),
        ],
        returns: "string (hex)",
        example: "gleitzeit run --function hash_text --args text=hello",
        blocking: false,
        run: hash_text,
    },
    Function {
        name: "base64_encode",
        category: "text",
        description: "Encodes a text (UTF-8) as base64, standard or URL-safe alphabet.",
        args: &[
            arg!("text", String, required, "The text to encode"),
            arg!("url_safe", Boolean, default "false", "Use - and _ and no padding"),
        ],
        returns: "string",
        example: "gleitzeit run --function base64_encode --args text=\"hello world\"",
        blocking: false,
        run: base64_encode,
    },
    Function {
        name: "base64_decode",
        category: "text",
        description: "Decodes base64 (standard or URL-safe, padding optional, whitespace ignored) into UTF-8 text.",
        args: &[arg!("text", String, required, "The base64 to decode")],
        returns: "string",
        example: "gleitzeit run --function base64_decode --args text=aGVsbG8gd29ybGQ=",
        blocking: false,
        run: base64_decode,
    },
];

pub(crate) const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "can't",
    "cannot",
    "could",
    "couldn't",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "got",
    "had",
    "hadn't",
    "has",
    "hasn't",
    "have",
    "haven't",
    "having",
    "he",
    "he'd",
    "he'll",
    "he's",
    "her",
    "here",
    "here's",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "how's",
    "however",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "let's",
    "like",
    "made",
    "make",
    "many",
    "may",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "mustn't",
    "my",
    "myself",
    "never",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "ought",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "shall",
    "shan't",
    "she",
    "she'd",
    "she'll",
    "she's",
    "should",
    "shouldn't",
    "since",
    "so",
    "some",
    "still",
    "such",
    "than",
    "that",
    "that's",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "they'd",
    "they'll",
    "they're",
    "they've",
    "this",
    "those",
    "though",
    "through",
    "thus",
    "to",
    "too",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "very",
    "was",
    "wasn't",
    "we",
    "we'd",
    "we'll",
    "we're",
    "we've",
    "well",
    "were",
    "weren't",
    "what",
    "what's",
    "when",
    "when's",
    "where",
    "where's",
    "whether",
    "which",
    "while",
    "who",
    "who's",
    "whom",
    "whose",
    "why",
    "why's",
    "will",
    "with",
    "within",
    "without",
    "won't",
    "would",
    "wouldn't",
    "yet",
    "you",
    "you'd",
    "you'll",
    "you're",
    "you've",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

/// Lower-cased words: runs of letters, digits and inner apostrophes.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '’'))
        .filter(|w| !w.is_empty())
        .map(|w| w.replace('’', "'").to_lowercase())
}

/// Sentences: stretches of text ending at `.`, `!` or `?` (or the end) that
/// contain at least one letter or digit.
fn sentence_count(text: &str) -> usize {
    text.split(['.', '!', '?'])
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .count()
}

/// Words with their counts, most frequent first, ties by first appearance.
fn ranked(words: impl Iterator<Item = String>) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
    for (position, word) in words.enumerate() {
        counts.entry(word).or_insert((0, position)).0 += 1;
    }
    let mut ranked: Vec<(String, usize, usize)> = counts
        .into_iter()
        .map(|(w, (n, first))| (w, n, first))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    ranked.into_iter().map(|(w, n, _)| (w, n)).collect()
}

fn count_words(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("count_words", m);
    let text = a.str("text")?;
    let unique: HashSet<String> = words(text).collect();
    Ok(json!({
        "words": text.split_whitespace().count(),
        "characters": text.chars().count(),
        "characters_no_spaces": text.chars().filter(|c| !c.is_whitespace()).count(),
        "lines": text.lines().count(),
        "sentences": sentence_count(text),
        "unique_words": unique.len(),
    }))
}

fn extract_keywords(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("extract_keywords", m);
    let text = a.str("text")?;
    let max = a.int("max_keywords")?;
    if max < 0 {
        return Err(a.error("max_keywords", format!("must be 0 or more, got {max}")));
    }
    let candidates = words(text).filter(|w| {
        w.chars().count() >= 3 && w.chars().any(char::is_alphabetic) && !is_stop_word(w)
    });
    let keywords = ranked(candidates)
        .into_iter()
        .take(max as usize)
        .map(|(w, _)| Value::String(w));
    Ok(Value::Array(keywords.collect()))
}

fn word_frequency(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("word_frequency", m);
    let text = a.str("text")?;
    let top = match a.opt_int("top")? {
        Some(n) if n < 0 => return Err(a.error("top", format!("must be 0 or more, got {n}"))),
        Some(n) => n as usize,
        None => usize::MAX,
    };
    let skip_stop = a.bool("ignore_stop_words")?;
    let all = words(text).filter(|w| !(skip_stop && is_stop_word(w)));
    let out: Map<String, Value> = ranked(all)
        .into_iter()
        .take(top)
        .map(|(w, n)| (w, Value::from(n)))
        .collect();
    Ok(Value::Object(out))
}

fn text_stats(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("text_stats", m);
    let text = a.str("text")?;
    let all: Vec<String> = words(text).collect();
    let word_count = all.len();
    let sentences = sentence_count(text);
    let letters: usize = all.iter().map(|w| w.chars().count()).sum();
    let longest = all.iter().fold("", |best, w| {
        if w.chars().count() > best.chars().count() {
            w
        } else {
            best
        }
    });
    let paragraphs = text.split("\n\n").filter(|p| !p.trim().is_empty()).count();
    let ratio = |x: usize, y: usize| if y == 0 { 0.0 } else { x as f64 / y as f64 };
    Ok(json!({
        "characters": text.chars().count(),
        "words": word_count,
        "sentences": sentences,
        "paragraphs": paragraphs,
        "average_word_length": num(crate::math::round_to(ratio(letters, word_count), 2)),
        "average_sentence_length": num(crate::math::round_to(ratio(word_count, sentences), 2)),
        "longest_word": longest,
        "reading_time_minutes": num(crate::math::round_to(word_count as f64 / 200.0, 2)),
    }))
}

fn uppercase(m: &Map<String, Value>, _: &FileGuard) -> Res {
    Ok(Value::String(
        Args::new("uppercase", m).str("text")?.to_uppercase(),
    ))
}

fn lowercase(m: &Map<String, Value>, _: &FileGuard) -> Res {
    Ok(Value::String(
        Args::new("lowercase", m).str("text")?.to_lowercase(),
    ))
}

fn reverse_text(m: &Map<String, Value>, _: &FileGuard) -> Res {
    Ok(Value::String(
        Args::new("reverse_text", m)
            .str("text")?
            .chars()
            .rev()
            .collect(),
    ))
}

fn slugify(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("slugify", m);
    let text = a.str("text")?;
    let separator = a.str("separator")?;
    let parts: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(str::to_lowercase)
        .collect();
    Ok(Value::String(parts.join(separator)))
}

fn truncate(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("truncate", m);
    let text = a.str("text")?;
    let length = a.int("length")?;
    if length < 0 {
        return Err(a.error("length", format!("must be 0 or more, got {length}")));
    }
    let length = length as usize;
    let suffix = a.str("suffix")?;
    if text.chars().count() <= length {
        return Ok(Value::String(text.to_string()));
    }
    let suffix_len = suffix.chars().count();
    let out: String = if suffix_len >= length {
        suffix.chars().take(length).collect()
    } else {
        text.chars().take(length - suffix_len).collect::<String>() + suffix
    };
    Ok(Value::String(out))
}

fn regex_extract(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("regex_extract", m);
    let text = a.str("text")?;
    let pattern = a.str("pattern")?;
    let group = a.int("group")?;
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(4 << 20)
        .dfa_size_limit(4 << 20)
        .build()
        .map_err(|e| a.error("pattern", format!("is not a valid regular expression: {e}")))?;
    let groups = regex.captures_len();
    let group = usize::try_from(group)
        .ok()
        .filter(|g| *g < groups)
        .ok_or_else(|| {
            a.error(
                "group",
                format!("is {group}, but the pattern has groups 0 to {}", groups - 1),
            )
        })?;
    let matches = regex
        .captures_iter(text)
        .filter_map(|c| c.get(group))
        .map(|m| Value::String(m.as_str().to_string()));
    Ok(Value::Array(matches.collect()))
}

fn split_text(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("split_text", m);
    let text = a.str("text")?;
    let separator = a.str("separator")?;
    let trim = a.bool("trim")?;
    let parts: Vec<String> = if separator.is_empty() {
        text.chars().map(String::from).collect()
    } else {
        text.split(separator).map(String::from).collect()
    };
    let parts = parts.into_iter().filter_map(|p| {
        if !trim {
            Some(Value::String(p))
        } else {
            let t = p.trim();
            (!t.is_empty()).then(|| Value::String(t.to_string()))
        }
    });
    Ok(Value::Array(parts.collect()))
}

/// Replacement output larger than this is refused.
const MAX_OUTPUT_BYTES: usize = 256 << 20;

fn replace_text(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("replace_text", m);
    let text = a.str("text")?;
    let find = a.str("find")?;
    let replace = a.str("replace")?;
    if find.is_empty() {
        return Err(a.error("find", "must not be empty"));
    }
    if replace.len() > find.len() {
        let count = text.matches(find).count();
        let growth = count.saturating_mul(replace.len() - find.len());
        if text.len().saturating_add(growth) > MAX_OUTPUT_BYTES {
            return Err(a.failed("the result would be larger than 256 MiB"));
        }
    }
    Ok(Value::String(text.replace(find, replace)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_text(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("hash_text", m);
    let text = a.str("text")?.as_bytes();
    let algorithm = a.str("algorithm")?;
    let digest = match algorithm
        .trim()
        .to_ascii_lowercase()
        .replace('-', "")
        .as_str()
    {
        "sha224" => hex(&sha2::Sha224::digest(text)),
        "sha256" => hex(&sha2::Sha256::digest(text)),
        "sha384" => hex(&sha2::Sha384::digest(text)),
        "sha512" => hex(&sha2::Sha512::digest(text)),
        _ => {
            return Err(a.error(
                "algorithm",
                format!("is {algorithm:?}; use sha224, sha256, sha384 or sha512"),
            ))
        }
    };
    Ok(Value::String(digest))
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(crate) fn encode_base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet = if url_safe { URL_SAFE } else { STANDARD };
    let symbol = |index: u32| char::from(alphabet[(index & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| chunk.get(i).copied().unwrap_or(0) as u32;
        let triple = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(symbol(triple >> 18));
        out.push(symbol(triple >> 12));
        for (i, shift) in [(1, 6), (2, 0)] {
            if chunk.len() > i {
                out.push(symbol(triple >> shift));
            } else if !url_safe {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64; `Err` names the offending character.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let cleaned: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| !c.is_whitespace())
        .collect();
    let end = cleaned
        .iter()
        .rposition(|(_, c)| *c != '=')
        .map_or(0, |p| p + 1);
    let padding = cleaned.len() - end;
    if padding > 2 {
        return Err("too much '=' padding".into());
    }
    let symbols = cleaned.get(..end).unwrap_or_default();
    if symbols.len() % 4 == 1 {
        return Err(format!(
            "{} symbols is not a valid base64 length",
            symbols.len()
        ));
    }
    let mut out = Vec::with_capacity(symbols.len() / 4 * 3 + 2);
    for chunk in symbols.chunks(4) {
        let mut acc: u32 = 0;
        for (offset, c) in chunk {
            let value = match c {
                'A'..='Z' => *c as u32 - 'A' as u32,
                'a'..='z' => *c as u32 - 'a' as u32 + 26,
                '0'..='9' => *c as u32 - '0' as u32 + 52,
                '+' | '-' => 62,
                '/' | '_' => 63,
                other => return Err(format!("invalid character {other:?} at position {offset}")),
            };
            acc = (acc << 6) | value;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(bytes.get(..chunk.len() - 1).unwrap_or_default());
    }
    Ok(out)
}

fn base64_encode(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("base64_encode", m);
    let text = a.str("text")?;
    let url_safe = a.bool("url_safe")?;
    Ok(Value::String(encode_base64(text.as_bytes(), url_safe)))
}

fn base64_decode(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("base64_decode", m);
    let text = a.str("text")?;
    let bytes =
        decode_base64(text).map_err(|e| a.error("text", format!("is not valid base64: {e}")))?;
    String::from_utf8(bytes).map(Value::String).map_err(|_| {
        a.failed("the decoded bytes are not UTF-8 text (binary data cannot be returned as text)")
    })
}

#[cfg(test)]
mod tests {
    use crate::tests::{call, err_code};
    use gleitzeit_core::ErrorCode;
    use serde_json::json;

    #[test]
    fn count_words_counts_everything() {
        let out = call(
            "count_words",
            json!({"text": "The cat sat. The dog ran!\nWhy?"}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "words": 7, "characters": 30, "characters_no_spaces": 24,
                "lines": 2, "sentences": 3, "unique_words": 6,
            })
        );
        let empty = call("count_words", json!({"text": ""})).unwrap();
        assert_eq!(empty["words"], 0);
        assert_eq!(empty["sentences"], 0);
        assert_eq!(
            call("count_words", json!({"text": "no full stop"})).unwrap()["sentences"],
            1
        );
    }

    #[test]
    fn extract_keywords_by_frequency_then_first_appearance() {
        let text = "Rust is fast. Rust is safe. Programs in Rust are fast and safe; memory safety matters.";
        let out = call("extract_keywords", json!({"text": text, "max_keywords": 4})).unwrap();
        assert_eq!(out, json!(["rust", "fast", "safe", "programs"]));
        let default = call("extract_keywords", json!({"text": text})).unwrap();
        assert_eq!(default.as_array().unwrap().len(), 5);
        assert_eq!(
            call("extract_keywords", json!({"text": "the and of"})).unwrap(),
            json!([])
        );
        assert_eq!(
            err_code("extract_keywords", json!({"text": "x", "max_keywords": -1})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn word_frequency_orders_by_count() {
        let out = call("word_frequency", json!({"text": "b a b c a b", "top": 2})).unwrap();
        assert_eq!(serde_json::to_string(&out).unwrap(), r#"{"b":3,"a":2}"#);
        let out = call(
            "word_frequency",
            json!({"text": "The cat and the hat", "ignore_stop_words": "yes"}),
        )
        .unwrap();
        assert_eq!(serde_json::to_string(&out).unwrap(), r#"{"cat":1,"hat":1}"#);
    }

    #[test]
    fn text_stats_reports_lengths() {
        let out = call(
            "text_stats",
            json!({"text": "One two three. Four five.\n\nSix!"}),
        )
        .unwrap();
        assert_eq!(out["words"], 6);
        assert_eq!(out["sentences"], 3);
        assert_eq!(out["paragraphs"], 2);
        assert_eq!(out["longest_word"], "three");
        assert_eq!(out["average_word_length"], 3.67);
        assert_eq!(out["average_sentence_length"], 2);
        assert_eq!(out["reading_time_minutes"], 0.03);
    }

    #[test]
    fn case_and_reverse() {
        assert_eq!(
            call("uppercase", json!({"text": "straße"})).unwrap(),
            json!("STRASSE")
        );
        assert_eq!(
            call("lowercase", json!({"text": "Hello World"})).unwrap(),
            json!("hello world")
        );
        assert_eq!(
            call("reverse_text", json!({"text": "stressed"})).unwrap(),
            json!("desserts")
        );
        assert_eq!(
            call("reverse_text", json!({"text": "añb"})).unwrap(),
            json!("bña")
        );
    }

    #[test]
    fn slugs() {
        assert_eq!(
            call("slugify", json!({"text": "Hello, World! 2024"})).unwrap(),
            json!("hello-world-2024")
        );
        assert_eq!(
            call(
                "slugify",
                json!({"text": "  Über  cool ", "separator": "_"})
            )
            .unwrap(),
            json!("über_cool")
        );
        assert_eq!(call("slugify", json!({"text": "!!!"})).unwrap(), json!(""));
    }

    #[test]
    fn truncation() {
        let text = "A long sentence here";
        assert_eq!(
            call("truncate", json!({"text": text, "length": 10})).unwrap(),
            json!("A long ...")
        );
        assert_eq!(
            call("truncate", json!({"text": text, "length": 50})).unwrap(),
            json!(text)
        );
        assert_eq!(
            call("truncate", json!({"text": text, "length": 2})).unwrap(),
            json!("..")
        );
        assert_eq!(
            call(
                "truncate",
                json!({"text": "äöüß", "length": 3, "suffix": "…"})
            )
            .unwrap(),
            json!("äö…")
        );
        assert_eq!(
            err_code("truncate", json!({"text": text, "length": -1})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn regex_extraction() {
        let out = call(
            "regex_extract",
            json!({"text": "a1 b22 c333", "pattern": "\\d+"}),
        )
        .unwrap();
        assert_eq!(out, json!(["1", "22", "333"]));
        let out = call(
            "regex_extract",
            json!({"text": "ann@x.org, bob@y.com", "pattern": "(\\w+)@", "group": 1}),
        );
        assert_eq!(out.unwrap(), json!(["ann", "bob"]));
        let bad = call(
            "regex_extract",
            json!({"text": "x", "pattern": "(unclosed"}),
        )
        .unwrap_err();
        assert_eq!(bad.code, ErrorCode::FunctionArgumentInvalid);
        assert!(bad.message.contains("`pattern`"), "{}", bad.message);
        assert_eq!(
            err_code(
                "regex_extract",
                json!({"text": "x", "pattern": "x", "group": 2})
            ),
            ErrorCode::FunctionArgumentInvalid
        );
        assert_eq!(
            err_code(
                "regex_extract",
                json!({"text": "x", "pattern": "\\w{1000}{1000}"})
            ),
            ErrorCode::FunctionArgumentInvalid,
            "size limit"
        );
    }

    #[test]
    fn splitting() {
        assert_eq!(
            call("split_text", json!({"text": "a, b,, c"})).unwrap(),
            json!(["a", "b", "c"])
        );
        assert_eq!(
            call(
                "split_text",
                json!({"text": "a, b", "separator": ",", "trim": false})
            )
            .unwrap(),
            json!(["a", " b"])
        );
        assert_eq!(
            call("split_text", json!({"text": "a b", "separator": " "})).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            call("split_text", json!({"text": "ab", "separator": ""})).unwrap(),
            json!(["a", "b"])
        );
    }

    #[test]
    fn replacing() {
        let out = call(
            "replace_text",
            json!({"text": "hello world, world", "find": "world", "replace": "there"}),
        );
        assert_eq!(out.unwrap(), json!("hello there, there"));
        assert_eq!(
            call("replace_text", json!({"text": "a-b-c", "find": "-"})).unwrap(),
            json!("abc")
        );
        assert_eq!(
            err_code("replace_text", json!({"text": "x", "find": ""})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn hashing() {
        assert_eq!(
            call("hash_text", json!({"text": "hello"})).unwrap(),
            json!("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert_eq!(
            call("hash_text", json!({"text": "", "algorithm": "SHA-224"})).unwrap(),
            json!("d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f")
        );
        assert_eq!(
            call("hash_text", json!({"text": "", "algorithm": "sha512"}))
                .unwrap()
                .as_str()
                .unwrap()
                .len(),
            128
        );
        assert_eq!(
            err_code("hash_text", json!({"text": "x", "algorithm": "md5"})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(
            call("base64_encode", json!({"text": "hello world"})).unwrap(),
            json!("aGVsbG8gd29ybGQ=")
        );
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(
                call("base64_encode", json!({"text": plain})).unwrap(),
                json!(encoded)
            );
            assert_eq!(
                call("base64_decode", json!({"text": encoded})).unwrap(),
                json!(plain)
            );
        }
        assert_eq!(
            call("base64_encode", json!({"text": "??>", "url_safe": true})).unwrap(),
            json!("Pz8-")
        );
        assert_eq!(
            call("base64_encode", json!({"text": "??>"})).unwrap(),
            json!("Pz8+")
        );
        assert_eq!(
            call("base64_decode", json!({"text": "Pz8-"})).unwrap(),
            json!("??>")
        );
        assert_eq!(
            call("base64_decode", json!({"text": "aGVs\nbG8"})).unwrap(),
            json!("hello")
        );
        assert_eq!(
            err_code("base64_decode", json!({"text": "a!=="})),
            ErrorCode::FunctionArgumentInvalid
        );
        assert_eq!(
            err_code("base64_decode", json!({"text": "abcde"})),
            ErrorCode::FunctionArgumentInvalid
        );
        assert_eq!(
            err_code("base64_decode", json!({"text": "/w=="})),
            ErrorCode::FunctionFailed,
            "0xff is not UTF-8"
        );
    }
}
