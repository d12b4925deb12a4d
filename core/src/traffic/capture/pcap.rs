//! The classic pcap file format with raw IPv4 packets (`LINKTYPE_RAW`), as Wireshark and tshark
//! read it.

/// `LINKTYPE_RAW`: each packet starts with its IP header.
pub const LINKTYPE_RAW: u32 = 101;
/// Bytes of each packet kept.
pub const SNAPLEN: u32 = 65535;

/// The 24-byte file header (microsecond timestamps, little-endian).
pub fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    h
}

/// Appends one packet record (16-byte header and the packet, cut at [`SNAPLEN`]) to `out`.
pub fn write_packet(out: &mut Vec<u8>, ts_us: u64, packet: &[u8]) {
    let kept = packet.len().min(SNAPLEN as usize);
    let secs = (ts_us / 1_000_000) as u32;
    let usecs = (ts_us % 1_000_000) as u32;
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&usecs.to_le_bytes());
    out.extend_from_slice(&(kept as u32).to_le_bytes());
    out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
    out.extend_from_slice(packet.get(..kept).unwrap_or(packet));
}
