//! QR codes of short URLs, as SVG (the `qrcode` crate's renderer) or PNG.
//!
//! The PNG is written here rather than through an image crate: a QR code
//! is a 1-bit greyscale picture, and a PNG of one needs only the header,
//! the rows (zlib stored blocks: no compressor to pull in) and two
//! checksums. At the sizes served (up to `MAX_SIZE` pixels a side) the file
//! stays well under 600 KB.

use qrcode::{Color, EcLevel, QrCode};

pub const DEFAULT_SIZE: u32 = 256;
pub const MIN_SIZE: u32 = 64;
pub const MAX_SIZE: u32 = 2048;
/// Light modules around the code, as the standard asks.
const QUIET: u32 = 4;

/// The code's modules (true = dark) and its width in modules.
fn modules(text: &str) -> Result<(Vec<bool>, u32), String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|e| e.to_string())?;
    let w = code.width() as u32;
    Ok((code.to_colors().into_iter().map(|c| c == Color::Dark).collect(), w))
}

pub fn svg(text: &str, size: u32) -> Result<String, String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|e| e.to_string())?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(size, size).max_dimensions(size, size).quiet_zone(true).build())
}

/// A PNG at least `size` pixels wide (whole pixels per module, so it may
/// come out a little smaller than asked when the size is not a multiple).
pub fn png(text: &str, size: u32) -> Result<Vec<u8>, String> {
    let (dark, w) = modules(text)?;
    let total = w + 2 * QUIET;
    let scale = (size / total).max(1);
    let px = total * scale;
    let row_bytes = px.div_ceil(8) as usize;
    let mut raw = Vec::with_capacity((row_bytes + 1) * px as usize);
    for y in 0..px {
        raw.push(0); // filter: none
        let my = (y / scale) as i64 - QUIET as i64;
        let mut byte = 0u8;
        for x in 0..px {
            let mx = (x / scale) as i64 - QUIET as i64;
            let is_dark = (0..w as i64).contains(&mx) && (0..w as i64).contains(&my) && dark[(my as u32 * w + mx as u32) as usize];
            // Greyscale 1 bit: 1 is white.
            byte = (byte << 1) | u8::from(!is_dark);
            if x % 8 == 7 {
                raw.push(byte);
                byte = 0;
            }
        }
        if px % 8 != 0 {
            raw.push(byte << (8 - px % 8));
        }
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&px.to_be_bytes());
    ihdr.extend_from_slice(&px.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]); // 1 bit, greyscale, deflate, adaptive filters, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// zlib framing around deflate "stored" blocks (RFC 1950, 1951 3.2.4).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 65_535;
    let mut out = Vec::with_capacity(data.len() + data.len() / BLOCK * 5 + 11);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = data.chunks(BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(b) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = b.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_png_frame() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let png = png("http://127.0.0.1:8080/abc1234", 256).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        let side = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert!((200..=256).contains(&side), "{side}");
        assert!(svg("http://x/y", 128).unwrap().contains("<svg"));
    }
}
