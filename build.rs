//! Precompresses the web UI's files (`src/ui/assets/`) with gzip and
//! writes the table `src/ui/mod.rs` includes: path, type, ETag, the raw
//! bytes and the gzip bytes, all embedded in the binary.

use std::io::Write;
use std::path::Path;

const ASSETS: &str = "src/ui/assets";

fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

fn main() {
    println!("cargo:rerun-if-changed={ASSETS}");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(ASSETS);
    let mut files: Vec<_> =
        std::fs::read_dir(&root).expect("reading src/ui/assets").map(|e| e.expect("a directory entry").path()).collect();
    files.sort();
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for file in files.iter().filter(|f| f.is_file()) {
        println!("cargo:rerun-if-changed={}", file.display());
        let name = file.file_name().and_then(|n| n.to_str()).expect("an ASCII file name");
        let raw = std::fs::read(file).expect("reading an asset");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&raw).expect("compressing in memory");
        let gz = gz.finish().expect("compressing in memory");
        let gz_path = Path::new(&out).join(format!("{name}.gz"));
        std::fs::write(&gz_path, &gz).expect("writing to OUT_DIR");
        let mut crc = flate2::Crc::new();
        crc.update(&raw);
        table.push_str(&format!(
            "    Asset {{ path: \"/{name}\", mime: \"{}\", etag: \"\\\"{:08x}-{:x}\\\"\", raw: include_bytes!({:?}), gzip: include_bytes!({:?}) }},\n",
            mime(name),
            crc.sum(),
            raw.len(),
            file.display().to_string(),
            gz_path.display().to_string(),
        ));
    }
    table.push_str("];\n");
    std::fs::write(Path::new(&out).join("ui_assets.rs"), table).expect("writing to OUT_DIR");
}
