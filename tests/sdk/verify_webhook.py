"""Checks an Axon webhook delivery as a receiver should, with the standard library only.

Usage: verify_webhook.py SECRET TIMESTAMP SIGNATURE BODY_FILE [NOW]
Exits 0 when the signature is valid and the timestamp at most 5 minutes old, 1 otherwise.
"""
import hashlib
import hmac
import sys
import time


def verify(secret: str, timestamp: str, signature: str, body: bytes, now: float) -> bool:
    if abs(now - int(timestamp)) > 300:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("v1=" + mac.hexdigest(), signature)


if __name__ == "__main__":
    secret, timestamp, signature, body_file = sys.argv[1:5]
    now = float(sys.argv[5]) if len(sys.argv) > 5 else time.time()
    with open(body_file, "rb") as f:
        body = f.read()
    sys.exit(0 if verify(secret, timestamp, signature, body, now) else 1)
