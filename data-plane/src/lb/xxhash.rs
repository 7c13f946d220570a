//! XXH64 (xxHash, 64-bit), the hash Envoy uses for ring-hash and Maglev host keys and for
//! request hash policies. Implemented here because the crate takes no hashing dependency.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

#[inline]
fn read64(d: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(d[i..i + 8].try_into().expect("8 bytes"))
}

#[inline]
fn read32(d: &[u8], i: usize) -> u64 {
    u32::from_le_bytes(d[i..i + 4].try_into().expect("4 bytes")) as u64
}

#[inline]
fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline]
fn merge_round(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `data` with `seed` (Envoy's `HashUtil::xxHash64(data, seed)`; its default seed is 0).
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let len = data.len();
    let mut i = 0;
    let mut h = if len >= 32 {
        let mut v1 = seed.wrapping_add(P1).wrapping_add(P2);
        let mut v2 = seed.wrapping_add(P2);
        let mut v3 = seed;
        let mut v4 = seed.wrapping_sub(P1);
        while i + 32 <= len {
            v1 = round(v1, read64(data, i));
            v2 = round(v2, read64(data, i + 8));
            v3 = round(v3, read64(data, i + 16));
            v4 = round(v4, read64(data, i + 24));
            i += 32;
        }
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        h = merge_round(h, v1);
        h = merge_round(h, v2);
        h = merge_round(h, v3);
        merge_round(h, v4)
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len as u64);
    while i + 8 <= len {
        h ^= round(0, read64(data, i));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        i += 8;
    }
    if i + 4 <= len {
        h ^= read32(data, i).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        i += 4;
    }
    while i < len {
        h ^= (data[i] as u64).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
        i += 1;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}

#[cfg(test)]
mod tests {
    use super::xxh64;

    #[test]
    fn reference_vectors() {
        // Reference values from the xxHash specification / xxhash-rust.
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn matches_reference_implementation() {
        // (length, seed, hash) from the xxhash-rust crate, data byte i = i·131 + 7.
        let vectors: [(usize, u64, u64); 51] = [
            (0, 0, 0xef46db3751d8e999),
            (0, 1, 0xd5afba1336a3be4b),
            (0, 16045690981402826360, 0xf78c2db467b46182),
            (1, 0, 0xa96c7f0ce858bbb7),
            (1, 1, 0x766883a0a47a96a),
            (1, 16045690981402826360, 0x3689e88b73149c9b),
            (3, 0, 0xbed43740ee6332bb),
            (3, 1, 0x95ba63f005e6e6ca),
            (3, 16045690981402826360, 0x124fbf35db3fc109),
            (4, 0, 0xfa212ae44b3bb23d),
            (4, 1, 0x319607b5ca9d59d4),
            (4, 16045690981402826360, 0x469e102075dbe669),
            (7, 0, 0x2744460dd675d2c0),
            (7, 1, 0x47cdce49d4bc99),
            (7, 16045690981402826360, 0x9f518348706e8454),
            (8, 0, 0x994b676b71ce94dd),
            (8, 1, 0xc14d78e582fe5026),
            (8, 16045690981402826360, 0xe788c288fae406),
            (12, 0, 0xb92f588ce720786e),
            (12, 1, 0x23eb959821a629a9),
            (12, 16045690981402826360, 0xfaf74803d519561e),
            (15, 0, 0x9e6451ed2ff8b1d),
            (15, 1, 0x40a4206cc723cce4),
            (15, 16045690981402826360, 0x578bc7b50372119b),
            (16, 0, 0x94ad0095e72b24d5),
            (16, 1, 0xc9b8f12f2ae6c76),
            (16, 16045690981402826360, 0xb3711abfb30b1288),
            (31, 0, 0x6711d55e306b5d8f),
            (31, 1, 0xe811d10b03941e82),
            (31, 16045690981402826360, 0x1f8bccf7361b10e7),
            (32, 0, 0x7f7b8e3bc5d6e25),
            (32, 1, 0xdf4f0f6ea84ebbca),
            (32, 16045690981402826360, 0x554e3e9a19d436cc),
            (33, 0, 0x9f85eeb4e1cbe9f),
            (33, 1, 0x489f1772049e476c),
            (33, 16045690981402826360, 0x6079ef90e2bb08ca),
            (63, 0, 0xb7c9968c066cb6a5),
            (63, 1, 0xbe65bc64322f219b),
            (63, 16045690981402826360, 0x6168fb790365205b),
            (64, 0, 0x50d4159a0411632e),
            (64, 1, 0x8ea281ce694f574d),
            (64, 16045690981402826360, 0xe3b3680defa2890d),
            (65, 0, 0xd277176bff863efc),
            (65, 1, 0x1b26ddaa63626478),
            (65, 16045690981402826360, 0x51e041a48e5c6751),
            (100, 0, 0x9ddada11d3dc2d8f),
            (100, 1, 0xe6a0d25e6e0a7f2a),
            (100, 16045690981402826360, 0xeb49daf2576da45b),
            (257, 0, 0xe9d3cdd6ff0ddfd3),
            (257, 1, 0x39e277875775c71),
            (257, 16045690981402826360, 0xf62ade25af1484e8),
        ];
        for (len, seed, expected) in vectors {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
            assert_eq!(xxh64(&data, seed), expected, "len {len} seed {seed}");
        }
    }
}
