//! The credentials vault through its public API: sealed credentials open only for their own
//! tenant and field under a known key, rotation rewraps without touching field ciphertexts, and
//! nothing secret leaks through `Debug` or error messages.

use std::io::Write as _;

use adsync_service::vault::{Credentials, Field, Keyring, MasterKey, Sealed, VaultError};
use secrecy::{ExposeSecret as _, SecretString};

const TENANT: &str = "tenant-a";
const OTHER_TENANT: &str = "tenant-b";
const EMAIL: &str = "ads@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn credentials() -> Credentials {
    Credentials::new(EMAIL, SecretString::from(PASSWORD))
}

fn ring() -> Keyring {
    Keyring::new(MasterKey::generate(), Vec::new())
}

/// A keyring holding copies of the given keys, the first current.
fn ring_of(keys: &[&MasterKey]) -> Keyring {
    let copy = |key: &MasterKey| MasterKey::from_base64(key.to_base64().expose_secret()).unwrap();
    Keyring::new(
        copy(keys[0]),
        keys[1..].iter().map(|key| copy(key)).collect(),
    )
}

fn assert_decrypt_error(result: Result<Credentials, VaultError>, tenant: &str, field: Field) {
    match result {
        Err(VaultError::Decrypt {
            tenant_id,
            field: failed,
        }) => {
            assert_eq!(tenant_id, tenant);
            assert_eq!(failed, field);
        }
        other => panic!("expected a Decrypt error on the {field}, got {other:?}"),
    }
}

#[test]
fn sealed_credentials_open_to_the_same_values() {
    let ring = ring();

    let sealed = ring.seal(TENANT, &credentials()).unwrap();
    let opened = ring.open(TENANT, &sealed).unwrap();

    assert_eq!(opened.email, EMAIL);
    assert_eq!(opened.password.expose_secret(), PASSWORD);
    assert_eq!(sealed.key_id, ring.current_id());
}

#[test]
fn stored_bytes_are_nonce_then_ciphertext_then_tag() {
    let ring = ring();

    let sealed = ring.seal(TENANT, &credentials()).unwrap();

    assert_eq!(sealed.wrapped_key.len(), 24 + 32 + 16);
    assert_eq!(sealed.email.len(), 24 + EMAIL.len() + 16);
    assert_eq!(sealed.password.len(), 24 + PASSWORD.len() + 16);
    let plaintext_in = |bytes: &[u8], text: &str| {
        bytes
            .windows(text.len())
            .any(|window| window == text.as_bytes())
    };
    assert!(!plaintext_in(&sealed.email, EMAIL));
    assert!(!plaintext_in(&sealed.password, PASSWORD));
}

#[test]
fn empty_values_round_trip() {
    let ring = ring();

    let sealed = ring
        .seal(TENANT, &Credentials::new("", SecretString::from("")))
        .unwrap();
    let opened = ring.open(TENANT, &sealed).unwrap();

    assert_eq!(opened.email, "");
    assert_eq!(opened.password.expose_secret(), "");
}

#[test]
fn a_whole_row_moved_to_another_tenant_does_not_open() {
    let ring = ring();
    let sealed = ring.seal(TENANT, &credentials()).unwrap();

    let result = ring.open(OTHER_TENANT, &sealed);

    assert_decrypt_error(result, OTHER_TENANT, Field::DataKey);
}

#[test]
fn a_field_ciphertext_moved_into_another_tenants_row_does_not_open() {
    let ring = ring();
    let mine = ring.seal(TENANT, &credentials()).unwrap();
    let mut theirs = ring
        .seal(
            OTHER_TENANT,
            &Credentials::new("b@example.com", SecretString::from("b")),
        )
        .unwrap();

    theirs.password = mine.password.clone();
    let result = ring.open(OTHER_TENANT, &theirs);

    assert_decrypt_error(result, OTHER_TENANT, Field::Password);
}

#[test]
fn email_and_password_ciphertexts_swapped_do_not_open() {
    let ring = ring();
    let mut sealed = ring.seal(TENANT, &credentials()).unwrap();

    std::mem::swap(&mut sealed.email, &mut sealed.password);
    let result = ring.open(TENANT, &sealed);

    assert_decrypt_error(result, TENANT, Field::Email);
}

#[test]
fn a_tampered_byte_anywhere_is_detected() {
    let ring = ring();
    let sealed = ring.seal(TENANT, &credentials()).unwrap();
    type Column = fn(&mut Sealed) -> &mut Vec<u8>;
    let columns: [(Field, Column); 3] = [
        (Field::DataKey, |s| &mut s.wrapped_key),
        (Field::Email, |s| &mut s.email),
        (Field::Password, |s| &mut s.password),
    ];

    for (field, column) in columns {
        let length = column(&mut sealed.clone()).len();
        // First nonce byte, first ciphertext byte, last tag byte.
        for position in [0, 24, length - 1] {
            let mut tampered = sealed.clone();
            column(&mut tampered)[position] ^= 0x01;

            let result = ring.open(TENANT, &tampered);

            assert_decrypt_error(result, TENANT, field);
        }
    }
}

#[test]
fn truncated_ciphertexts_are_detected() {
    let ring = ring();
    let sealed = ring.seal(TENANT, &credentials()).unwrap();

    let mut short = sealed.clone();
    short.email.truncate(30);
    let mut empty = sealed.clone();
    empty.password.clear();

    assert_decrypt_error(ring.open(TENANT, &short), TENANT, Field::Email);
    assert_decrypt_error(ring.open(TENANT, &empty), TENANT, Field::Password);
}

#[test]
fn a_row_under_a_key_the_ring_lacks_fails_with_unknown_key() {
    let sealing = ring();
    let sealed = sealing.seal(TENANT, &credentials()).unwrap();
    let other = ring();

    let result = other.open(TENANT, &sealed);

    match result {
        Err(VaultError::UnknownKey { key_id }) => assert_eq!(key_id, sealing.current_id()),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn a_row_relabelled_with_another_known_key_id_does_not_open() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let ring = ring_of(&[&new, &old]);
    let mut sealed = ring.seal(TENANT, &credentials()).unwrap();

    sealed.key_id = old.id().to_owned();
    let result = ring.open(TENANT, &sealed);

    assert_decrypt_error(result, TENANT, Field::DataKey);
}

#[test]
fn rotation_rewraps_so_only_the_new_key_is_needed() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let sealed = ring_of(&[&old]).seal(TENANT, &credentials()).unwrap();
    let during_rotation = ring_of(&[&new, &old]);

    let rewrapped = during_rotation.rewrap(TENANT, &sealed).unwrap().unwrap();

    assert_eq!(rewrapped.key_id, new.id());
    assert_eq!(rewrapped.email, sealed.email);
    assert_eq!(rewrapped.password, sealed.password);
    assert_ne!(rewrapped.wrapped_key, sealed.wrapped_key);
    let opened = ring_of(&[&new]).open(TENANT, &rewrapped).unwrap();
    assert_eq!(opened.email, EMAIL);
    assert_eq!(opened.password.expose_secret(), PASSWORD);
    assert!(matches!(
        ring_of(&[&old]).open(TENANT, &rewrapped),
        Err(VaultError::UnknownKey { .. })
    ));
}

#[test]
fn a_ring_mid_rotation_opens_rows_under_either_key_and_seals_under_the_new_one() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let under_old = ring_of(&[&old]).seal(TENANT, &credentials()).unwrap();
    let during_rotation = ring_of(&[&new, &old]);

    let under_new = during_rotation.seal(OTHER_TENANT, &credentials()).unwrap();

    assert_eq!(under_new.key_id, new.id());
    assert_eq!(
        during_rotation.open(TENANT, &under_old).unwrap().email,
        EMAIL
    );
    assert_eq!(
        during_rotation
            .open(OTHER_TENANT, &under_new)
            .unwrap()
            .email,
        EMAIL
    );
}

#[test]
fn rewrap_is_none_when_the_row_is_already_under_the_current_key() {
    let ring = ring();
    let sealed = ring.seal(TENANT, &credentials()).unwrap();

    let result = ring.rewrap(TENANT, &sealed).unwrap();

    assert!(result.is_none());
}

#[test]
fn rewrap_refuses_a_row_of_another_tenant_and_an_unknown_key() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let sealed = ring_of(&[&old]).seal(TENANT, &credentials()).unwrap();

    let wrong_tenant = ring_of(&[&new, &old]).rewrap(OTHER_TENANT, &sealed);
    let without_old = ring_of(&[&new]).rewrap(TENANT, &sealed);

    assert!(matches!(
        wrong_tenant,
        Err(VaultError::Decrypt {
            field: Field::DataKey,
            ..
        })
    ));
    assert!(matches!(without_old, Err(VaultError::UnknownKey { .. })));
}

#[test]
fn two_seals_of_the_same_values_differ() {
    let ring = ring();

    let first = ring.seal(TENANT, &credentials()).unwrap();
    let second = ring.seal(TENANT, &credentials()).unwrap();

    assert_ne!(first.wrapped_key, second.wrapped_key);
    assert_ne!(first.email, second.email);
    assert_ne!(first.password, second.password);
    assert_ne!(
        first.email[..24],
        second.email[..24],
        "nonces must be fresh"
    );
}

#[test]
fn a_master_key_survives_its_base64_form_with_the_same_id() {
    let key = MasterKey::generate();
    let text = key.to_base64();

    let padded = MasterKey::from_base64(&format!("  {}\n", text.expose_secret())).unwrap();
    let unpadded = MasterKey::from_base64(text.expose_secret().trim_end_matches('=')).unwrap();

    assert_eq!(text.expose_secret().len(), 44);
    assert_eq!(padded.id(), key.id());
    assert_eq!(unpadded.id(), key.id());
}

#[test]
fn a_master_key_id_is_a_short_fingerprint_that_differs_between_keys() {
    let first = MasterKey::generate();
    let second = MasterKey::generate();

    assert!(first.id().starts_with("mk_"));
    assert_eq!(first.id().len(), 3 + 16);
    assert!(first.id()[3..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(first.id(), second.id());
}

#[test]
fn a_master_key_id_is_stable_for_a_known_key() {
    // 32 zero bytes; pins the id derivation so stored rows stay readable across releases.
    let key = MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();

    assert_eq!(key.id(), expected_zero_key_id());
}

/// SHA-256("adsync master key id" || [0; 32]), first 8 bytes in hex.
fn expected_zero_key_id() -> &'static str {
    "mk_88656af92e486670"
}

fn bad_key_message(result: Result<MasterKey, VaultError>) -> String {
    match result {
        Err(error @ VaultError::BadKey(_)) => error.to_string(),
        other => panic!("expected BadKey, got {other:?}"),
    }
}

#[test]
fn a_key_of_the_wrong_length_is_refused_with_a_hint_and_without_the_input() {
    // 16 bytes of base64.
    let input = "c2VjcmV0LXNlY3JldC0xNg==";

    let message = bad_key_message(MasterKey::from_base64(input));

    assert!(message.contains("adsync keys generate"), "{message}");
    assert!(message.contains("16 bytes"), "{message}");
    assert!(!message.contains(input), "{message}");
}

#[test]
fn a_key_that_is_not_base64_is_refused_with_a_hint_and_without_the_input() {
    let input = "not-base64-at-all!!supersecret";

    let message = bad_key_message(MasterKey::from_base64(input));

    assert!(message.contains("adsync keys generate"), "{message}");
    assert!(message.contains("base64"), "{message}");
    assert!(!message.contains("supersecret"), "{message}");
    assert!(!message.contains('!'), "{message}");
}

#[test]
fn an_empty_key_is_refused_with_a_hint() {
    let message = bad_key_message(MasterKey::from_base64("  \n"));

    assert!(message.contains("adsync keys generate"), "{message}");
}

#[test]
fn a_keyring_parses_comma_and_whitespace_separated_keys_first_current() {
    let new = MasterKey::generate();
    let old = MasterKey::generate();
    let older = MasterKey::generate();
    let text = format!(
        " {} ,{}\n\t{}\n",
        new.to_base64().expose_secret(),
        old.to_base64().expose_secret(),
        older.to_base64().expose_secret()
    );

    let ring = Keyring::parse(&text).unwrap();

    assert_eq!(ring.current_id(), new.id());
    assert_eq!(ring.ids(), vec![new.id(), old.id(), older.id()]);
}

#[test]
fn a_keyring_keeps_a_repeated_key_once() {
    let key = MasterKey::generate();
    let text = format!("{0},{0}", key.to_base64().expose_secret());

    let ring = Keyring::parse(&text).unwrap();

    assert_eq!(ring.ids(), vec![key.id()]);
}

#[test]
fn a_keyring_with_a_bad_key_names_its_position_not_its_content() {
    let good = MasterKey::generate();
    let text = format!("{},c2hvcnQ=", good.to_base64().expose_secret());

    let error = Keyring::parse(&text).unwrap_err();
    let message = error.to_string();

    assert!(matches!(error, VaultError::BadKey(_)));
    assert!(message.contains("2 of 2"), "{message}");
    assert!(message.contains("adsync keys generate"), "{message}");
    assert!(!message.contains("c2hvcnQ"), "{message}");
    assert!(
        !message.contains(good.to_base64().expose_secret()),
        "{message}"
    );
}

#[test]
fn an_empty_keyring_is_refused_with_a_hint() {
    let error = Keyring::parse(" , \n").unwrap_err();

    assert!(matches!(error, VaultError::BadKey(_)));
    assert!(error.to_string().contains("adsync keys generate"));
}

#[test]
fn a_keyring_reads_from_a_file() {
    let new = MasterKey::generate();
    let old = MasterKey::generate();
    let file = TempFile::with(&format!(
        "{}\n{}\n",
        new.to_base64().expose_secret(),
        old.to_base64().expose_secret()
    ));

    let ring = Keyring::from_file(&file.path).unwrap();

    assert_eq!(ring.ids(), vec![new.id(), old.id()]);
}

#[test]
fn a_bad_keyring_file_is_named_without_its_content() {
    let file = TempFile::with("dG9vLXNob3J0LXNlY3JldA==\n");

    let message = Keyring::from_file(&file.path).unwrap_err().to_string();

    assert!(
        message.contains(&file.path.display().to_string()),
        "{message}"
    );
    assert!(message.contains("adsync keys generate"), "{message}");
    assert!(!message.contains("dG9vLXNob3J0LXNlY3JldA"), "{message}");
}

#[test]
fn a_missing_keyring_file_is_an_io_error_naming_the_path() {
    let path = std::env::temp_dir().join("adsync-vault-test-no-such-file.key");

    let error = Keyring::from_file(&path).unwrap_err();

    match &error {
        VaultError::Io { path: named, .. } => assert_eq!(named, &path),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(error.to_string().contains(&path.display().to_string()));
}

#[test]
fn debug_output_shows_no_key_and_no_password() {
    let key = MasterKey::generate();
    let key_text = key.to_base64().expose_secret().to_owned();
    let ring = ring_of(&[&key]);
    let credentials = credentials();
    let sealed = ring.seal(TENANT, &credentials).unwrap();

    let outputs = [
        format!("{key:?}"),
        format!("{ring:?}"),
        format!("{credentials:?}"),
        format!("{sealed:?}"),
        format!("{sealed:#?}"),
    ];

    for output in &outputs {
        assert!(!output.contains(&key_text), "{output}");
        assert!(!output.contains(&key_text[..16]), "{output}");
        assert!(!output.contains(PASSWORD), "{output}");
    }
    assert!(outputs[0].contains(key.id()));
    assert!(outputs[1].contains(key.id()));
    assert!(outputs[2].contains(EMAIL));
    assert!(outputs[3].contains(key.id()));
    // The Sealed bytes themselves are not dumped, only their lengths.
    assert!(
        !outputs[3].contains(&format!("{:?}", &sealed.password[..4])),
        "{}",
        outputs[3]
    );
}

#[test]
fn error_messages_show_no_plaintext() {
    let ring = ring();
    let mut sealed = ring.seal(TENANT, &credentials()).unwrap();
    sealed.password[30] ^= 0x01;

    let message = ring.open(TENANT, &sealed).unwrap_err().to_string();

    assert!(message.contains(TENANT), "{message}");
    assert!(message.contains("password"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
    assert!(!message.contains(EMAIL), "{message}");
}

/// A file in the temp directory, removed on drop.
struct TempFile {
    path: std::path::PathBuf,
}

impl TempFile {
    fn with(content: &str) -> TempFile {
        let unique = format!(
            "adsync-vault-test-{}-{}.key",
            std::process::id(),
            MasterKey::generate().id()
        );
        let path = std::env::temp_dir().join(unique);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(content.as_bytes()).unwrap();
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
