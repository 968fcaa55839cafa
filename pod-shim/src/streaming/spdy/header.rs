//! SPDY/3 header blocks: name/value pairs compressed with zlib and the SPDY/3 dictionary, one
//! compression context per direction for the whole connection.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::sync::LazyLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::{protocol, SpdyError};

/// Largest decompressed header block accepted.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Headers accepted in one block.
pub const MAX_HEADERS: usize = 1024;

/// The SPDY/3 header dictionary: the specification's length-prefixed words, then its tail.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for word in WORDS {
        d.extend_from_slice(&(word.len() as u32).to_be_bytes());
        d.extend_from_slice(word.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
});

/// Header names and values of a stream, names lowercase; a value may hold several,
/// NUL-separated.
pub type Headers = Vec<(String, String)>;

/// Decodes the header blocks of one direction of a connection.
pub struct HeaderDecoder {
    inflate: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            inflate: Decompress::new(true),
        }
    }
}

impl HeaderDecoder {
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let mut input = block;
        loop {
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(protocol("header block too large"));
            }
            out.reserve(1024);
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let status = match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(s) => s,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| protocol(format!("header dictionary: {e}")))?;
                    Status::Ok
                }
                Err(e) => return Err(protocol(format!("header block: {e}"))),
            };
            let used = (self.inflate.total_in() - before_in) as usize;
            input = input.get(used..).unwrap_or_default();
            let produced = self.inflate.total_out() - before_out;
            if matches!(status, Status::StreamEnd) || (input.is_empty() && produced == 0) {
                break;
            }
            if used == 0 && produced == 0 && !matches!(status, Status::Ok) {
                // zlib took nothing and gave nothing with room to spare: no later round would
                // differ, so this block cannot be decoded.
                return Err(protocol("header block makes no progress"));
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let mut at = 0usize;
    let take_u32 = |at: &mut usize| -> Result<u32, SpdyError> {
        let s =
            dockpod_proto::wire::array(b, *at).ok_or_else(|| protocol("truncated header block"))?;
        *at += 4;
        Ok(u32::from_be_bytes(s))
    };
    let count = take_u32(&mut at)? as usize;
    if count > MAX_HEADERS {
        return Err(protocol("too many headers"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let field = |at: &mut usize| -> Result<String, SpdyError> {
            let len = take_u32(at)? as usize;
            let s = b
                .get(*at..*at + len)
                .ok_or_else(|| protocol("truncated header block"))?;
            *at += len;
            Ok(String::from_utf8_lossy(s).into_owned())
        };
        let name = field(&mut at)?;
        let value = field(&mut at)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// Encodes the header blocks of one direction of a connection.
pub struct HeaderEncoder {
    deflate: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // A fresh compressor accepts a dictionary; failing that is a bug in the library.
        let _ = deflate.set_dictionary(&DICTIONARY);
        HeaderEncoder { deflate }
    }
}

impl HeaderEncoder {
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            if self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            let used = (self.deflate.total_in() - before) as usize;
            input = input.get(used..).unwrap_or_default();
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specifications() {
        assert_eq!(DICTIONARY.len(), 1423);
        // zlib names a preset dictionary by its Adler-32; real clients' streams carry this one.
        let mut adler = (1u32, 0u32);
        for b in DICTIONARY.iter() {
            adler.0 = (adler.0 + u32::from(*b)) % 65521;
            adler.1 = (adler.1 + adler.0) % 65521;
        }
        assert_eq!((adler.1 << 16) | adler.0, 0xe3c6_a7c2);
    }

    #[test]
    fn headers_round_trip_through_one_context() {
        let mut enc = HeaderEncoder::default();
        let mut dec = HeaderDecoder::default();
        for i in 0..3 {
            let port = format!("{}", 8080 + i);
            let block = enc.encode(&[("streamtype", "data"), ("port", &port)]);
            let headers = dec.decode(&block).expect("decode");
            assert_eq!(
                headers,
                vec![
                    ("streamtype".to_string(), "data".to_string()),
                    ("port".to_string(), port)
                ]
            );
        }
    }

    /// Random and mutated header blocks: every one is decoded or refused, none panics, and
    /// a block that inflates past the bound is refused rather than grown.
    #[test]
    fn fuzzed_header_blocks_are_decoded_or_refused() {
        let mut rng = super::super::frame::tests::Rng(0x5eed_1e55);
        let mut enc = HeaderEncoder::default();
        let valid = enc.encode(&[("streamtype", "stdin"), ("port", "8080")]);
        for round in 0..4000 {
            let mut dec = HeaderDecoder::default();
            let block: Vec<u8> = if round % 2 == 0 {
                let mut b = valid.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len());
                    b[at] ^= 1 << rng.below(8);
                }
                b
            } else {
                (0..rng.below(300)).map(|_| rng.next() as u8).collect()
            };
            if let Ok(headers) = dec.decode(&block) {
                assert!(headers.len() <= MAX_HEADERS);
            }
            let _ = parse_header_block(&block);
        }
        // A block of zeros compresses to almost nothing and would inflate without end.
        let raw = vec![0u8; 4 * MAX_HEADER_BLOCK];
        let mut deflate = Compress::new(Compression::default(), true);
        let _ = deflate.set_dictionary(&DICTIONARY);
        let mut block = Vec::with_capacity(8192);
        deflate
            .compress_vec(&raw, &mut block, FlushCompress::Sync)
            .expect("compress");
        assert!(HeaderDecoder::default().decode(&block).is_err());
    }
}
