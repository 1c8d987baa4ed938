//! The credentials vault: tenant credentials are write-only and encrypted at rest.
//!
//! # Scheme
//!
//! Every tenant's credentials are sealed under their own random 32-byte *data key*. Each field
//! (email, password) is encrypted with XChaCha20-Poly1305 under that data key, with a fresh
//! random 24-byte nonce and the associated data `b"adsync/v1/field\0" + tenant_id + b"\0" +
//! field`, so a ciphertext copied to another tenant's row or into the other column fails to
//! decrypt. The data key itself is *wrapped* (encrypted) with XChaCha20-Poly1305 under a
//! *master key*, with the associated data `b"adsync/v1/data-key\0" + tenant_id`. What is stored
//! is a [`Sealed`]: the master key's public id, the wrapped data key and the two field
//! ciphertexts, each laid out as `nonce (24 bytes) || ciphertext || tag (16 bytes)`. Data keys
//! live in zeroizing buffers and are wiped when a call returns.
//!
//! The master key is 32 random bytes in base64, from `ADSYNC_MASTER_KEY` or a file, made by
//! `adsync keys generate`. Its [`MasterKey::id`] is a fingerprint that is safe to store and log.
//!
//! # Rotating the master key without downtime
//!
//! A process holds a [`Keyring`]: the first key seals new credentials, every key opens (chosen
//! by the key id stored in the row).
//!
//! 1. `adsync keys generate` makes NEW.
//! 2. Restart the servers and workers one by one with the keyring `"NEW,OLD"`: every process can
//!    still open rows under OLD, and new rows are sealed under NEW.
//! 3. `adsync keys rotate` (with the same keyring) calls [`Keyring::rewrap`] on every row, which
//!    re-encrypts only the small wrapped data key under NEW; the field ciphertexts are unchanged.
//! 4. Once no row names OLD's id any more, restart the processes with `"NEW"` and destroy OLD.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Length of a master key and of a data key, in bytes.
const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce, in bytes.
const NONCE_LEN: usize = 24;
/// Length of a Poly1305 tag, in bytes.
const TAG_LEN: usize = 16;

const DATA_KEY_AD: &[u8] = b"adsync/v1/data-key\0";
const FIELD_AD: &[u8] = b"adsync/v1/field\0";
const KEY_ID_DOMAIN: &[u8] = b"adsync master key id";

/// The hint every bad-key message ends with.
const HOW_TO_MAKE_A_KEY: &str = "make one with `adsync keys generate`";

/// Accepts standard base64 with or without the trailing `=`, as people paste keys both ways.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a vault operation failed. No message ever contains key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A master key (or keyring) could not be read: not base64, not 32 bytes, or empty. The
    /// message says how to make a key and never echoes the input.
    #[error("{0}")]
    BadKey(String),
    /// A sealed row names a master key that is not in the keyring: the process was started
    /// without the key the row was sealed (or last rewrapped) under.
    #[error(
        "the credentials were sealed under master key {key_id}, which is not in the keyring; \
         start with a keyring that includes it"
    )]
    UnknownKey {
        /// The id stored in the row.
        key_id: String,
    },
    /// Authenticated decryption failed: the ciphertext belongs to another tenant or another
    /// field, was tampered with or truncated, or the master key with this id is not the one
    /// that sealed it.
    #[error(
        "cannot decrypt the {field} of tenant {tenant_id}: wrong tenant, wrong field, tampered data or wrong key"
    )]
    Decrypt {
        /// The tenant the caller asked for.
        tenant_id: String,
        /// What failed to decrypt.
        field: Field,
    },
    /// Encryption failed. XChaCha20-Poly1305 refuses only plaintexts of 256 GiB or more, so this
    /// does not happen for credentials.
    #[error("cannot encrypt the {field} of tenant {tenant_id}")]
    Encrypt {
        /// The tenant being sealed.
        tenant_id: String,
        /// What failed to encrypt.
        field: Field,
    },
    /// The keyring file could not be read.
    #[error("cannot read the master key file {}: {message}", path.display())]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
}

/// What a ciphertext in a [`Sealed`] holds; part of its associated data and of error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The tenant's data key, wrapped under a master key.
    DataKey,
    /// The login email.
    Email,
    /// The login password.
    Password,
}

impl Field {
    /// The name used in associated data; changing it makes every stored row unreadable.
    fn ad_name(self) -> &'static [u8] {
        match self {
            Field::DataKey => b"data-key",
            Field::Email => b"email",
            Field::Password => b"password",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::DataKey => "data key",
            Field::Email => "email",
            Field::Password => "password",
        })
    }
}

/// A 32-byte master key that wraps the tenants' data keys, with its public id.
pub struct MasterKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl MasterKey {
    /// A new random key from the operating system's random number generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide randomness.
    pub fn generate() -> MasterKey {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut key[..]);
        MasterKey::from_bytes(key)
    }

    /// Reads a key from its base64 form (surrounding whitespace ignored); it must decode to
    /// exactly 32 bytes. The error says how to make a key and does not repeat the input.
    pub fn from_base64(text: &str) -> Result<MasterKey, VaultError> {
        decode_key(text.trim()).map_err(|problem| {
            VaultError::BadKey(format!("the master key {problem}; {HOW_TO_MAKE_A_KEY}"))
        })
    }

    /// The key in base64, the form [`MasterKey::from_base64`] reads.
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(BASE64.encode(&self.key[..]))
    }

    /// A short public fingerprint (`mk_` and 16 hex digits) that names the key in stored rows and
    /// logs; it reveals nothing usable about the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> MasterKey {
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(&key[..])
            .finalize();
        let mut id = String::with_capacity(3 + 16);
        id.push_str("mk_");
        for byte in &digest[..8] {
            id.push_str(&format!("{byte:02x}"));
        }
        MasterKey { key, id }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(<&Key>::from(&*self.key))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Decodes one base64 key; the error is the end of a sentence that starts "the master key".
fn decode_key(text: &str) -> Result<MasterKey, String> {
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    // The decoder's own error names the offending character, so it is not passed on.
    let bytes = Zeroizing::new(
        BASE64
            .decode(text)
            .map_err(|_| "is not valid base64".to_owned())?,
    );
    if bytes.len() != KEY_LEN {
        return Err(format!(
            "decodes to {} bytes, but {KEY_LEN} are needed",
            bytes.len()
        ));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes);
    Ok(MasterKey::from_bytes(key))
}

/// The master keys a process knows: the first (current) seals new credentials and is the target
/// of [`Keyring::rewrap`]; every key opens rows that name its id. Running with `"NEW,OLD"` during
/// a rotation is what makes it need no downtime (see the module documentation).
pub struct Keyring {
    /// The current key first; no two keys share an id.
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring that seals under `current` and also opens under `older`. A key given twice is
    /// kept once.
    pub fn new(current: MasterKey, older: Vec<MasterKey>) -> Keyring {
        let mut keys = vec![current];
        for key in older {
            if keys.iter().all(|known| known.id != key.id) {
                keys.push(key);
            }
        }
        Keyring { keys }
    }

    /// Reads base64 keys separated by commas or whitespace (the form of `ADSYNC_MASTER_KEY`);
    /// the first is current. Errors say which key is wrong by position, never by content.
    pub fn parse(text: &str) -> Result<Keyring, VaultError> {
        let parts: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .collect();
        let count = parts.len();
        let mut keys = Vec::with_capacity(count);
        for (index, part) in parts.into_iter().enumerate() {
            let key = decode_key(part).map_err(|problem| {
                let which = if count == 1 {
                    "the master key".to_owned()
                } else {
                    format!("master key {} of {count}", index + 1)
                };
                VaultError::BadKey(format!("{which} {problem}; {HOW_TO_MAKE_A_KEY}"))
            })?;
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let current = keys.next().ok_or_else(|| {
            VaultError::BadKey(format!("no master key was given; {HOW_TO_MAKE_A_KEY}"))
        })?;
        Ok(Keyring::new(current, keys.collect()))
    }

    /// Reads a keyring from a file in the [`Keyring::parse`] format. Errors name the path but
    /// never the content.
    pub fn from_file(path: &Path) -> Result<Keyring, VaultError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|error| VaultError::Io {
            path: path.to_owned(),
            message: error.to_string(),
        })?);
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::Io {
            path: path.to_owned(),
            message: "the file is not UTF-8 text".to_owned(),
        })?;
        Keyring::parse(text).map_err(|error| match error {
            VaultError::BadKey(message) => {
                VaultError::BadKey(format!("in {}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// The id of the key that seals new credentials.
    pub fn current_id(&self) -> &str {
        &self.current().id
    }

    /// The ids of all keys, the current one first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.id.as_str()).collect()
    }

    /// Encrypts a tenant's credentials under a new random data key, wrapped by the current
    /// master key.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide randomness.
    pub fn seal(&self, tenant_id: &str, credentials: &Credentials) -> Result<Sealed, VaultError> {
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut data_key[..]);
        let fields = XChaCha20Poly1305::new(<&Key>::from(&*data_key));
        let email = encrypt(
            &fields,
            tenant_id,
            Field::Email,
            credentials.email.as_bytes(),
        )?;
        let password = encrypt(
            &fields,
            tenant_id,
            Field::Password,
            credentials.password.expose_secret().as_bytes(),
        )?;
        let current = self.current();
        let wrapped_key = encrypt(&current.cipher(), tenant_id, Field::DataKey, &data_key[..])?;
        Ok(Sealed {
            key_id: current.id.clone(),
            wrapped_key,
            email,
            password,
        })
    }

    /// Decrypts a tenant's credentials with the master key the row names.
    ///
    /// Fails with [`VaultError::UnknownKey`] when that key is not in the keyring, and with
    /// [`VaultError::Decrypt`] when `sealed` was not sealed for `tenant_id` exactly as stored.
    pub fn open(&self, tenant_id: &str, sealed: &Sealed) -> Result<Credentials, VaultError> {
        let data_key = self.unwrap_data_key(tenant_id, sealed)?;
        let fields = XChaCha20Poly1305::new(<&Key>::from(&*data_key));
        let undecodable = |field| VaultError::Decrypt {
            tenant_id: tenant_id.to_owned(),
            field,
        };
        let email = decrypt(&fields, tenant_id, Field::Email, &sealed.email)?;
        let email = std::str::from_utf8(&email)
            .map_err(|_| undecodable(Field::Email))?
            .to_owned();
        let password = decrypt(&fields, tenant_id, Field::Password, &sealed.password)?;
        // Copied into an exactly sized box: turning the buffer into a `String` and then a
        // `Box<str>` would reallocate and leave an unwiped copy behind.
        let password: Box<str> = std::str::from_utf8(&password)
            .map_err(|_| undecodable(Field::Password))?
            .into();
        Ok(Credentials {
            email,
            password: SecretString::from(password),
        })
    }

    /// Re-encrypts the data key under the current master key, leaving the field ciphertexts as
    /// they are; `Ok(None)` when the row is already under the current key. The caller stores the
    /// result in place of `sealed`.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide randomness.
    pub fn rewrap(&self, tenant_id: &str, sealed: &Sealed) -> Result<Option<Sealed>, VaultError> {
        let current = self.current();
        if sealed.key_id == current.id {
            return Ok(None);
        }
        let data_key = self.unwrap_data_key(tenant_id, sealed)?;
        let wrapped_key = encrypt(&current.cipher(), tenant_id, Field::DataKey, &data_key[..])?;
        Ok(Some(Sealed {
            key_id: current.id.clone(),
            wrapped_key,
            email: sealed.email.clone(),
            password: sealed.password.clone(),
        }))
    }

    fn current(&self) -> &MasterKey {
        &self.keys[0]
    }

    fn unwrap_data_key(
        &self,
        tenant_id: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        let master = self
            .keys
            .iter()
            .find(|key| key.id == sealed.key_id)
            .ok_or_else(|| VaultError::UnknownKey {
                key_id: sealed.key_id.clone(),
            })?;
        let plaintext = decrypt(
            &master.cipher(),
            tenant_id,
            Field::DataKey,
            &sealed.wrapped_key,
        )?;
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        if plaintext.len() != KEY_LEN {
            return Err(VaultError::Decrypt {
                tenant_id: tenant_id.to_owned(),
                field: Field::DataKey,
            });
        }
        data_key.copy_from_slice(&plaintext);
        Ok(data_key)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

/// A tenant's login for the ad platform, in the clear. Its `Debug` hides the password.
pub struct Credentials {
    /// The login email.
    pub email: String,
    /// The login password.
    pub password: SecretString,
}

impl Credentials {
    /// Credentials from their parts.
    pub fn new(email: impl Into<String>, password: SecretString) -> Credentials {
        Credentials {
            email: email.into(),
            password,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// Sealed credentials as stored in a tenant's row. Each byte field is
/// `nonce (24 bytes) || ciphertext || tag (16 bytes)`. Its `Debug` shows only the key id and
/// the lengths.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The [`MasterKey::id`] of the key that wraps the data key.
    pub key_id: String,
    /// The tenant's data key, encrypted under the master key.
    pub wrapped_key: Vec<u8>,
    /// The email, encrypted under the data key.
    pub email: Vec<u8>,
    /// The password, encrypted under the data key.
    pub password: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("email_len", &self.email.len())
            .field("password_len", &self.password.len())
            .finish()
    }
}

/// The associated data that binds a ciphertext to its tenant and field.
fn associated_data(tenant_id: &str, field: Field) -> Vec<u8> {
    let mut ad = Vec::new();
    match field {
        Field::DataKey => {
            ad.extend_from_slice(DATA_KEY_AD);
            ad.extend_from_slice(tenant_id.as_bytes());
        }
        Field::Email | Field::Password => {
            ad.extend_from_slice(FIELD_AD);
            ad.extend_from_slice(tenant_id.as_bytes());
            ad.push(0);
            ad.extend_from_slice(field.ad_name());
        }
    }
    ad
}

/// `nonce || ciphertext || tag`, with a fresh random nonce. The plaintext is copied only into a
/// buffer that is encrypted in place and sized so it never reallocates.
fn encrypt(
    cipher: &XChaCha20Poly1305,
    tenant_id: &str,
    field: Field,
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.resize(NONCE_LEN, 0);
    fill_random(&mut out[..NONCE_LEN]);
    out.extend_from_slice(plaintext);
    let (nonce, body) = out
        .split_first_chunk_mut::<NONCE_LEN>()
        .expect("the buffer starts with a nonce");
    let tag = cipher
        .encrypt_in_place_detached(
            <&XNonce>::from(&*nonce),
            &associated_data(tenant_id, field),
            body,
        )
        .map_err(|_| VaultError::Encrypt {
            tenant_id: tenant_id.to_owned(),
            field,
        })?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The plaintext of `nonce || ciphertext || tag`, in a buffer wiped on drop.
fn decrypt(
    cipher: &XChaCha20Poly1305,
    tenant_id: &str,
    field: Field,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let failed = || VaultError::Decrypt {
        tenant_id: tenant_id.to_owned(),
        field,
    };
    let Some((nonce, body)) = sealed.split_first_chunk::<NONCE_LEN>() else {
        return Err(failed());
    };
    if body.len() < TAG_LEN {
        return Err(failed());
    }
    let mut buffer = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_in_place(
            <&XNonce>::from(nonce),
            &associated_data(tenant_id, field),
            &mut *buffer,
        )
        .map_err(|_| failed())?;
    Ok(buffer)
}

fn fill_random(buffer: &mut [u8]) {
    OsRng
        .try_fill_bytes(buffer)
        .expect("the operating system's random number generator failed");
}
