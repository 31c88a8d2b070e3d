#!/usr/bin/env python3
"""Writes the DHCP reply fixtures in this directory, as hex, one 16-byte row a line.

Independent of the Rust code on purpose: the checksums here are computed by this script, so
the Rust unwrapping is checked against a second implementation.

slirp_*: what QEMU's user network (libslirp src/bootp.c, bootp_reply) sends to a client with
MAC 52:54:00:12:34:56: server 10.0.2.2, yiaddr 10.0.2.15, options in its order (53, 54, 1, 3,
6, 51, END), no T1/T2, the vendor area zero-filled to 312 bytes. Its NAK carries only 53 and
56 and a yiaddr of 255.255.255.255 (bootp.c leaves the broadcast destination in it).

isc_*: replies shaped like ISC dhcpd's (server 192.168.1.1, yiaddr 192.168.1.100, lease
600 s, explicit T1/T2 in the ACK, broadcast address 28, domain name, two DNS servers, MTU),
padded to the 300-byte BOOTP minimum, and sent unicast to yiaddr as dhcpd does when the
client did not set the broadcast flag.
"""
import struct

SLIRP_MAC = bytes.fromhex("525400123456")
SLIRP_XID = 0x3903F326
ISC_MAC = bytes.fromhex("020000aabbcc")
ISC_XID = 0x5A1F00D2


def ip(s):
    return bytes(int(x) for x in s.split("."))


def opt(code, value):
    return bytes([code, len(value)]) + value


def bootp_reply(xid, yiaddr, siaddr, mac, options, vend_len=None, min_len=None):
    header = struct.pack("!BBBBIHH", 2, 1, 6, 0, xid, 0, 0)
    header += ip("0.0.0.0") + ip(yiaddr) + ip(siaddr) + ip("0.0.0.0")
    header += mac + bytes(10) + bytes(64) + bytes(128)
    vend = bytes([99, 130, 83, 99]) + options + bytes([255])
    if vend_len is not None:
        vend += bytes(vend_len - len(vend))
    msg = header + vend
    if min_len is not None and len(msg) < min_len:
        msg += bytes(min_len - len(msg))
    return msg


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_udp(payload, src, dst, ident, tos):
    udp_len = 8 + len(payload)
    pseudo = ip(src) + ip(dst) + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", 67, 68, udp_len, 0) + payload
    c = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    hdr = struct.pack("!BBHHHBBH", 0x45, tos, 20 + udp_len, ident, 0, 64, 17, 0) + ip(src) + ip(dst)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + udp


def write(name, data):
    with open(name, "w") as f:
        for i in range(0, len(data), 16):
            f.write(data[i : i + 16].hex(" ") + "\n")


slirp_common = (
    opt(54, ip("10.0.2.2"))
    + opt(1, ip("255.255.255.0"))
    + opt(3, ip("10.0.2.2"))
    + opt(6, ip("10.0.2.3"))
    + opt(51, struct.pack("!I", 86400))
)
slirp_offer = bootp_reply(SLIRP_XID, "10.0.2.15", "10.0.2.2", SLIRP_MAC, opt(53, b"\x02") + slirp_common, vend_len=312)
slirp_ack = bootp_reply(SLIRP_XID, "10.0.2.15", "10.0.2.2", SLIRP_MAC, opt(53, b"\x05") + slirp_common, vend_len=312)
slirp_nak = bootp_reply(
    SLIRP_XID, "255.255.255.255", "10.0.2.2", SLIRP_MAC,
    opt(53, b"\x06") + opt(56, b"requested address not available"), vend_len=312,
)
write("slirp_offer.hex", slirp_offer)
write("slirp_ack.hex", slirp_ack)
write("slirp_nak.hex", slirp_nak)
# IPTOS_LOWDELAY, as slirp's udp_output is called with.
write("slirp_offer_ipv4.hex", ip_udp(slirp_offer, "10.0.2.2", "255.255.255.255", 0x0001, 0x10))

isc_common = (
    opt(54, ip("192.168.1.1"))
    + opt(51, struct.pack("!I", 600))
)
isc_params = (
    opt(1, ip("255.255.255.0"))
    + opt(28, ip("192.168.1.255"))
    + opt(3, ip("192.168.1.1"))
    + opt(15, b"example.org")
    + opt(6, ip("192.168.1.1") + ip("192.168.1.2"))
    + opt(26, struct.pack("!H", 1400))
)
isc_offer = bootp_reply(ISC_XID, "192.168.1.100", "0.0.0.0", ISC_MAC, opt(53, b"\x02") + isc_common + isc_params, min_len=300)
isc_ack = bootp_reply(
    ISC_XID, "192.168.1.100", "0.0.0.0", ISC_MAC,
    opt(53, b"\x05") + isc_common + opt(58, struct.pack("!I", 300)) + opt(59, struct.pack("!I", 525)) + isc_params,
    min_len=300,
)
write("isc_offer.hex", isc_offer)
write("isc_ack.hex", isc_ack)
write("isc_ack_ipv4.hex", ip_udp(isc_ack, "192.168.1.1", "192.168.1.100", 0x6C2B, 0x00))
