//! zstd files: one frame per object, as Athena, DuckDB, Snowflake and the `zstd` tool read it.
//!
//! A file that ends within its first staging block (most files of a worker with many folders
//! open) is compressed in one shot by the worker's shared context for its level: no per-file
//! state. A file that goes on past its first block gets a context of its own (window capped at
//! [`WINDOW_LOG`], so it holds about a megabyte), fed a block at a time and flushed, so its
//! compressed bytes can be taken as multipart parts while it fills; the last block ends the
//! frame. Frames carry their content checksum.
//!
//! Invariant: the bytes produced for a file, concatenated, are exactly one zstd frame of its
//! lines; a context's memory is reported by [`ZstdFile::memory_bytes`] /
//! [`SharedZstd::memory_bytes`] while it exists.

use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective as EndDirective;
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer};

/// Largest match distance of a file's own context, as a power of two (1 MiB): the context's
/// window buffer and tables are sized by it.
pub const WINDOW_LOG: u32 = 20;

/// A context at `level` with the connector's parameters (checksum on, window capped).
fn context(level: i32) -> CCtx<'static> {
    let mut c = CCtx::create();
    // Valid parameters (checked at start-up for the level): errors cannot happen.
    let _ = c.set_parameter(CParameter::CompressionLevel(level));
    let _ = c.set_parameter(CParameter::WindowLog(WINDOW_LOG));
    let _ = c.set_parameter(CParameter::ChecksumFlag(true));
    c
}

/// The worker's one-shot contexts, one per level in use, shared by all its zstd files.
#[derive(Default)]
pub struct SharedZstd {
    contexts: Vec<(i32, CCtx<'static>)>,
}

impl SharedZstd {
    fn for_level(&mut self, level: i32) -> &mut CCtx<'static> {
        let i = match self.contexts.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                self.contexts.push((level, context(level)));
                self.contexts.len() - 1
            }
        };
        &mut self.contexts[i].1
    }

    /// Memory the shared contexts hold.
    pub fn memory_bytes(&self) -> usize {
        self.contexts.iter().map(|(_, c)| c.sizeof()).sum()
    }
}

/// One zstd file's compression state.
pub struct ZstdFile {
    level: i32,
    /// The file's own context, once it went on past its first block.
    own: Option<CCtx<'static>>,
}

impl ZstdFile {
    /// A file compressed at `level`.
    pub fn new(level: i32) -> Self {
        Self { level, own: None }
    }

    /// Compresses one staged block into `out`; `last` ends the frame.
    pub fn compress(
        &mut self,
        shared: &mut SharedZstd,
        block: &[u8],
        out: &mut Vec<u8>,
        last: bool,
    ) {
        if self.own.is_none() && last {
            // The whole file in one block: one shot, with the content size in the frame header.
            // (`compress2` writes from the start of its buffer.)
            let mut frame = Vec::with_capacity(zstd_safe::compress_bound(block.len()));
            // The output has room for the bound: compression cannot fail.
            let _ = shared.for_level(self.level).compress2(&mut frame, block);
            if out.is_empty() {
                *out = frame;
            } else {
                out.extend_from_slice(&frame);
            }
            return;
        }
        let level = self.level;
        let cctx = self.own.get_or_insert_with(|| context(level));
        let directive = if last {
            EndDirective::ZSTD_e_end
        } else {
            EndDirective::ZSTD_e_flush
        };
        let mut input = InBuffer::around(block);
        loop {
            out.reserve(zstd_safe::compress_bound(block.len() - input.pos()).max(1024));
            let start = out.len();
            let mut output = OutBuffer::around_pos(out, start);
            let remaining = match cctx.compress_stream2(&mut output, &mut input, directive) {
                Ok(r) => r,
                // Only a context in error state could fail; the next block starts a new frame.
                Err(_) => return,
            };
            if remaining == 0 && input.pos() == block.len() {
                break;
            }
        }
        if last {
            self.own = None;
        }
    }

    /// Memory this file's own context holds (none while it has none).
    pub fn memory_bytes(&self) -> usize {
        self.own.as_ref().map_or(0, CCtx::sizeof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: &[u8]) -> Vec<u8> {
        zstd::stream::decode_all(b).unwrap()
    }

    fn frames(b: &[u8]) -> usize {
        let mut n = 0;
        let mut rest = b;
        while !rest.is_empty() {
            let len = zstd_safe::find_frame_compressed_size(rest).unwrap();
            rest = &rest[len..];
            n += 1;
        }
        n
    }

    #[test]
    fn one_block_and_many_blocks_are_one_frame_each() {
        let mut shared = SharedZstd::default();
        let line = b"{\"type\":\"track\",\"event\":\"Product Viewed\",\"n\":12345}\n";
        let small = line.repeat(10);
        let mut out = Vec::new();
        let mut f = ZstdFile::new(3);
        f.compress(&mut shared, &small, &mut out, true);
        assert_eq!(decode(&out), small);
        assert_eq!(frames(&out), 1);
        assert_eq!(f.memory_bytes(), 0, "no context of its own");

        let mut out = Vec::new();
        let mut f = ZstdFile::new(3);
        let block = line.repeat(5_000);
        let mut parts = Vec::new();
        for i in 0..4 {
            f.compress(&mut shared, &block, &mut out, i == 3);
            if i == 1 {
                assert!(f.memory_bytes() > 0, "its own context while it goes on");
                parts.push(std::mem::take(&mut out));
            }
        }
        parts.push(out);
        let whole = parts.concat();
        assert_eq!(frames(&whole), 1);
        assert_eq!(decode(&whole), block.repeat(4));
        assert_eq!(f.memory_bytes(), 0, "released at the end");
        assert!(shared.memory_bytes() > 0);
    }
}
