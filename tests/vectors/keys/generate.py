# Regenerates the derived fixtures from minisign-valid.{pub,unencrypted.key}
# (made by `minisign -G -W`). Run from this directory: python3 generate.py
import base64, hashlib, os
def line2(path):
    return base64.b64decode(open(path).read().splitlines()[1])
def write(name, comment, raw=None, text=None):
    if text is None:
        text = "untrusted comment: %s\n%s\n" % (comment, base64.b64encode(raw).decode())
    open(name, "w" if isinstance(text, str) else "wb").write(text)
pub = line2("minisign-valid.pub")
sec = line2("minisign-valid-unencrypted.key")
assert len(pub) == 42 and len(sec) == 158
kid = sec[54:62]; kp = sec[62:126]
def chk(kid, kp): return hashlib.blake2b(b"Ed" + kid + kp, digest_size=32).digest()
good = sec[:126] + chk(kid, kp)
write("secret-correct-checksum.key", "secret key with a correct checksum", good)
bad = bytearray(good); bad[-1] ^= 1
write("secret-checksum-mismatch.key", "checksum off by one bit", bytes(bad))
kp2 = bytearray(kp); kp2[40] ^= 1; kp2 = bytes(kp2)
write("secret-inconsistent-public-half.key", "public half does not match the seed; checksum correct", sec[:62] + kp2 + chk(kid, kp2))
enc = b"Ed" + b"Sc" + b"B2" + os.urandom(32) + (33554432).to_bytes(8,"little") + (1073741824).to_bytes(8,"little") + os.urandom(104)
write("secret-encrypted-scrypt.key", "minisign encrypted secret key", enc)
write("secret-unknown-kdf.key", "kdf label Xx", sec[:2] + b"Xx" + sec[4:])
write("secret-wrong-checksum-alg.key", "chk label B3", sec[:4] + b"B3" + sec[6:])
write("secret-wrong-sig-alg.key", "sig label ED", b"ED" + sec[2:])
write("secret-truncated.key", "157 bytes", good[:-1])
write("public-wrong-sig-alg.pub", "prehashed label ED is not a key algorithm", b"ED" + pub[2:])
def weak(name, pt, what):
    write(name, what, b"Ed" + pub[2:10] + pt)
weak("public-weak-identity.pub", bytes([1]) + bytes(31), "identity point")
weak("public-weak-order2.pub", bytes([0xec]) + b"\xff"*30 + bytes([0x7f]), "order 2 point (y = -1)")
weak("public-weak-order4.pub", bytes(32), "order 4 point (y = 0)")
weak("public-not-a-point.pub", bytes([2]) + bytes(31), "y = 2 is not on the curve")
write("public-short.pub", "41 bytes, valid base64", pub[:-1])
b64 = base64.b64encode(pub).decode()
write("public-truncated-base64.pub", None, text="untrusted comment: base64 cut mid-quantum\n%s\n" % b64[:-3])
write("public-base64-inner-space.pub", None, text="untrusted comment: space inside the base64\n%s %s\n" % (b64[:20], b64[20:]))
sb64 = base64.b64encode(sec).decode()
assert sb64.endswith("=")
write("secret-base64-unpadded.key", None, text="untrusted comment: padding removed\n%s\n" % sb64.rstrip("="))
write("public-three-lines.pub", None, text="untrusted comment: extra line\n%s\nsomething else\n" % b64)
write("public-no-comment.pub", None, text="%s\n" % b64)
write("public-comment-not-untrusted.pub", None, text="trusted comment: nope\n%s\n" % b64)
write("public-crlf.pub", None, text=b"untrusted comment: CRLF line ends\r\n" + b64.encode() + b"\r\n")
write("public-no-final-newline.pub", None, text="untrusted comment: no final newline\n%s" % b64)
write("public-two-final-newlines.pub", None, text="untrusted comment: two final newlines\n%s\n\n" % b64)
write("public-too-large.pub", None, text="untrusted comment: " + "A"*5000 + "\n%s\n" % b64)
