//! Writes Berth's offline test image (Debian's busybox-static in three layers) as an image
//! archive that `ctr`/`bctr images import` take: `make-image [--docker] <out.tar> [name]`.

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let docker = if let Some(i) = args.iter().position(|a| a == "--docker") {
        args.remove(i);
        true
    } else {
        false
    };
    let Some(out) = args.first() else {
        eprintln!("usage: make-image [--docker] <out.tar> [image name]");
        std::process::exit(2);
    };
    let name = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "docker.io/library/busybox:berth".to_owned());
    let img = berth_tests::fixtures::busybox_image(&name);
    let path = std::path::Path::new(out);
    if docker {
        berth_tests::fixtures::write_docker_archive(path, &img);
    } else {
        berth_tests::fixtures::write_oci_archive(path, std::slice::from_ref(&img));
    }
    println!("{name} -> {}", path.display());
}
