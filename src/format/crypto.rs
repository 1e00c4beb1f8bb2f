//! The encryption seam. Every stored object except key envelopes is sealed here with
//! XChaCha20-Poly1305 under a key derived from the master secret; nothing read from the
//! backend is used before `open` authenticated it. Key material is zeroized on drop and
//! nonces are drawn fresh from the OS for every seal, never reused or copied.
//!
//! Format 2 binds every sealed object that is not a blob to its kind ([`Kind`], the AEAD's
//! associated data), so that no sealed object can stand in for one of another kind: a data
//! blob whose plaintext an attacker chose cannot pass for the config, a snapshot, an index
//! file, a pack header or the prune marker. Blobs need no binding: a blob is accepted only if
//! its plaintext hashes (keyed) to the id its tree or index names. Objects a format-1 pbak
//! wrote carry no binding; a key for a format-1 or migrated repository accepts those too
//! ([`MasterKey::accept_unbound`]).

use crate::ids::BlobId;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object is longer than its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The repository's 32-byte master secret and the subkeys derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    secret: [u8; 32],
    enc: [u8; 32],
    id: [u8; 32],
    /// Also open objects sealed without a kind (format 1).
    unbound: bool,
}

/// What a sealed object is: its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Config,
    Index,
    Snapshot,
    PackHeader,
    PruneMarker,
    /// A record of what runs did (`runs/`, FORMAT.md §8.4).
    Run,
    /// A segment of the local cache's merged index (never stored in a repository).
    IndexCache,
}

impl Kind {
    fn ad(self) -> &'static [u8] {
        match self {
            Kind::Config => b"pbak config",
            Kind::Index => b"pbak index",
            Kind::Snapshot => b"pbak snapshot",
            Kind::PackHeader => b"pbak pack header",
            Kind::PruneMarker => b"pbak prune marker",
            Kind::Run => b"pbak run record",
            Kind::IndexCache => b"pbak index cache",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("authentication failed (wrong key, or the bytes were altered)")]
pub struct AuthError;

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        random(&mut *secret);
        MasterKey::from_secret(&secret)
    }

    /// The key for `secret`. Taken by reference, so the only copy made is the one inside the
    /// key (wiped on drop); the caller wipes its own.
    pub fn from_secret(secret: &[u8; 32]) -> MasterKey {
        MasterKey {
            secret: *secret,
            enc: blake3::derive_key("pbak 2026-11 object encryption v1", secret),
            id: blake3::derive_key("pbak 2026-11 blob id v1", secret),
            unbound: false,
        }
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Keyed BLAKE3 of a blob's plaintext: the provider cannot test for known content.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }

    /// Seed for FastCDC's gear table, so chunk boundaries depend on the key.
    pub fn chunker_seed(&self) -> u64 {
        let k = blake3::derive_key("pbak 2026-11 chunker gear seed v1", &self.secret);
        u64::from_le_bytes(k[..8].try_into().expect("8 bytes"))
    }

    /// Also accept objects sealed without a kind (a format-1 or migrated repository).
    pub fn accept_unbound(&mut self, yes: bool) {
        self.unbound = yes;
    }

    /// Seal a blob (bound to nothing: its id binds it).
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        seal_ad(&self.enc, plaintext, b"")
    }

    /// [`MasterKey::seal`] into `out` (cleared first): a reused buffer spares the allocator
    /// one large block per blob.
    pub fn seal_into(&self, plaintext: &[u8], out: Vec<u8>) -> Vec<u8> {
        seal_ad_into(&self.enc, plaintext, b"", out)
    }

    /// Open a blob.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        open_ad(&self.enc, sealed, b"")
    }

    /// Seal an object of `kind`.
    pub fn seal_as(&self, kind: Kind, plaintext: &[u8]) -> Vec<u8> {
        seal_ad(&self.enc, plaintext, kind.ad())
    }

    /// Open an object of `kind`: only one sealed as that kind (or, where accepted, one sealed
    /// by format 1 without a kind).
    pub fn open_as(&self, kind: Kind, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        match open_ad(&self.enc, sealed, kind.ad()) {
            Err(_) if self.unbound => open_ad(&self.enc, sealed, b""),
            r => r,
        }
    }

    /// Authenticate and decrypt `sealed` where it lies; returns the plaintext part of it.
    /// Used where the sealed bytes are a scratch copy anyway (a pack window being checked).
    pub fn open_in_place<'a>(&self, sealed: &'a mut [u8]) -> Result<&'a [u8], AuthError> {
        if sealed.len() < OVERHEAD {
            return Err(AuthError);
        }
        let cipher = XChaCha20Poly1305::new((&self.enc).into());
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (ct, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        cipher
            .decrypt_in_place_detached(XNonce::from_slice(nonce), b"", ct, Tag::from_slice(tag))
            .map_err(|_| AuthError)?;
        Ok(ct)
    }
}

/// `nonce || ciphertext || tag` under `key`, built in one exactly sized buffer: the
/// plaintext is copied once and encrypted where it lands.
pub fn seal_with(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    seal_ad(key, plaintext, b"")
}

/// [`seal_with`] with associated data `ad` (authenticated, not stored).
pub fn seal_ad(key: &[u8; 32], plaintext: &[u8], ad: &[u8]) -> Vec<u8> {
    seal_ad_into(key, plaintext, ad, Vec::new())
}

/// [`seal_ad`] into `out`, cleared first and grown to exactly the sealed size if too small.
pub fn seal_ad_into(key: &[u8; 32], plaintext: &[u8], ad: &[u8], mut out: Vec<u8>) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    out.clear();
    out.reserve_exact(OVERHEAD + plaintext.len());
    out.resize(NONCE_LEN, 0);
    random(&mut out);
    out.extend_from_slice(plaintext);
    let (nonce, body) = out.split_at_mut(NONCE_LEN);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), ad, body)
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    out.extend_from_slice(&tag);
    out
}

pub fn open_with(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    open_ad(key, sealed, b"")
}

/// [`open_with`] with associated data `ad`.
pub fn open_ad(key: &[u8; 32], sealed: &[u8], ad: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < OVERHEAD {
        return Err(AuthError);
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let payload = chacha20poly1305::aead::Payload { msg: ct, aad: ad };
    cipher
        .decrypt(XNonce::from_slice(nonce), payload)
        .map_err(|_| AuthError)
}

pub fn random(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the OS random source is unavailable");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seal_open_and_tamper() {
        let k = MasterKey::generate();
        let s = k.seal(b"hello");
        assert_eq!(k.open(&s).unwrap(), b"hello");
        let mut bad = s.clone();
        bad[30] ^= 1;
        assert!(k.open(&bad).is_err());
        assert!(MasterKey::generate().open(&s).is_err());
        assert_ne!(k.seal(b"hello"), s, "nonces must differ");
    }

    #[test]
    fn an_object_opens_only_as_its_own_kind() {
        let mut k = MasterKey::generate();
        let s = k.seal_as(Kind::Snapshot, b"snap");
        assert_eq!(k.open_as(Kind::Snapshot, &s).unwrap(), b"snap");
        for other in [Kind::Config, Kind::Index, Kind::PackHeader, Kind::PruneMarker] {
            assert!(k.open_as(other, &s).is_err(), "{other:?}");
        }
        assert!(k.open(&s).is_err(), "not as a blob either");
        // A blob (bound to nothing) passes for no kind, unless format-1 objects are accepted.
        let blob = k.seal(b"attacker's file");
        assert!(k.open_as(Kind::Config, &blob).is_err());
        k.accept_unbound(true);
        assert_eq!(k.open_as(Kind::Config, &blob).unwrap(), b"attacker's file");
    }

    #[test]
    fn in_place_matches_the_allocating_api() {
        let k = MasterKey::generate();
        let plain: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let s = k.seal(&plain);
        assert_eq!(s.len(), plain.len() + OVERHEAD);
        // The one-buffer seal is the AEAD's usual `ciphertext || tag` behind the nonce.
        let cipher = XChaCha20Poly1305::new((&k.enc).into());
        assert_eq!(
            cipher
                .decrypt(XNonce::from_slice(&s[..NONCE_LEN]), &s[NONCE_LEN..])
                .unwrap(),
            plain
        );
        let mut copy = s.clone();
        assert_eq!(k.open_in_place(&mut copy).unwrap(), &plain[..]);
        let mut bad = s.clone();
        bad[NONCE_LEN + 3] ^= 0x40;
        assert!(k.open_in_place(&mut bad).is_err());
        assert!(k.open_in_place(&mut [0u8; OVERHEAD - 1]).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_open(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = MasterKey::from_secret(&[1; 32]);
            prop_assert!(k.open(&data).is_err());
            let mut data = data;
            prop_assert!(k.open_in_place(&mut data).is_err());
        }
    }
}
