#!/usr/bin/env python3
"""Extract the six Jane Austen novels from r-cran-janeaustenr's lazy-load DB.

Usage: extract_texts.py DATA_DIR OUT_DIR

DATA_DIR holds Rdata.rdx and Rdata.rdb (usr/lib/R/site-library/janeaustenr/data
of the unpacked .deb).  For each novel this checks the sha256 of the raw text
(the character vector's elements joined with "\\n") against the table in
shared/docs/MODEL_NOTES.md section 7, writes OUT_DIR/raw/<name>.txt, then the
normalised text OUT_DIR/<name>.txt (hard-wrapped lines joined with a space,
paragraphs separated by one blank line), and OUT_DIR/SHA256SUMS for both.
Prints the normalised paths one per line.  Python standard library only.
"""
import gzip
import hashlib
import os
import struct
import sys
import zlib

RAW_SHA256 = {
    "emma": "dd08b340a56ad4a0a00718d5682528a5a5886ae0aef91c9e0fa528074fa64b75",
    "mansfieldpark": "e0e9ef3863ea77f51f6070062ee0dd50ad9b933223880617629e4e4963ea40ff",
    "northangerabbey": "8618a5acf5be50cc6e9b7680c7469fb6012649ab08c709dfc63c6367989fd31d",
    "persuasion": "726513a6c18bb678427bcbcf7c72d0d20816a67c25b0471b26ddcabf3ebac140",
    "prideprejudice": "2e44edaa4946d64ad541c68e0224f5d672f43bf3ce2a8a0b0637ad5e02fc6eb3",
    "sensesensibility": "0996d90842bbe8093f3b8142c1e77d1b20cff52d1d0615f3ed67733653e74e26",
}

# R serialization type codes (R internals, "Serialization Formats").
SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP = 1, 2, 9, 10, 13, 14
STRSXP, VECSXP, NILVALUE_SXP, REFSXP = 16, 19, 254, 255
HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10


class RdsReader:
    """Reads the subset of R's XDR serialization that these objects use."""

    def __init__(self, data):
        self.data, self.pos, self.refs = data, 0, []
        if data[:2] != b"X\n":
            raise ValueError("not an XDR RDS stream (want 'X\\n')")
        self.pos = 2
        version = self.int()
        self.int(), self.int()  # writer R version, minimal reader version
        if version == 3:  # native encoding string
            self.take(self.int())
        elif version != 2:
            raise ValueError(f"unsupported RDS version {version}")

    def int(self):
        if self.pos + 4 > len(self.data):
            raise ValueError("truncated RDS stream")
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated RDS stream")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        if t == NILVALUE_SXP:
            return None
        if t == REFSXP:
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if t == SYMSXP:
            sym = self.item()  # a CHARSXP
            self.refs.append(sym)
            return sym
        if t == LISTSXP:
            return self.pairlist(flags)
        if t == CHARSXP:
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8")
        value = self.vector(t)
        if flags & HAS_ATTR:
            self.item()  # attributes (e.g. names): not needed
        return value

    def vector(self, t):
        n = self.int()
        if t in (STRSXP, VECSXP):
            return [self.item() for _ in range(n)]
        if t in (INTSXP, LGLSXP):
            return list(struct.unpack(f">{n}i", self.take(4 * n)))
        if t == REALSXP:
            return list(struct.unpack(f">{n}d", self.take(8 * n)))
        raise ValueError(f"unsupported R type {t} at byte {self.pos}")

    def pairlist(self, flags):
        """Returns a dict tag -> value; iterative along the CDR chain."""
        out = {}
        while True:
            if flags & HAS_ATTR:
                self.item()
            tag = self.item() if flags & HAS_TAG else None
            out[tag] = self.item()
            flags = self.int()
            if flags & 0xFF == NILVALUE_SXP:
                return out
            if flags & 0xFF != LISTSXP:
                raise ValueError("pairlist tail is not a pairlist")


def read_object(rdb, offset, length):
    blob = rdb[offset:offset + length]
    if len(blob) != length or length < 4:
        raise ValueError(f"record at {offset} runs past Rdata.rdb")
    (raw_len,) = struct.unpack_from(">I", blob, 0)
    data = zlib.decompress(blob[4:])
    if len(data) != raw_len:
        raise ValueError(f"record at {offset}: inflated {len(data)} bytes, header says {raw_len}")
    return RdsReader(data).item()


def normalise(text):
    """Joins hard-wrapped lines; paragraphs are separated by one blank line."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    paragraphs, current = [], []
    for line in text.split("\n"):
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs) + "\n"


def variable_slices(data_dir):
    """Maps object name -> (offset, length) from Rdata.rdx."""
    with gzip.open(os.path.join(data_dir, "Rdata.rdx"), "rb") as f:
        reader = RdsReader(f.read())
    flags = reader.int()
    if flags & 0xFF != VECSXP:
        raise ValueError("Rdata.rdx: top level is not a list")
    n = reader.int()
    if n < 1:
        raise ValueError("Rdata.rdx: empty index")
    # First element: the 'variables' list of (offset, length) int pairs; its
    # names attribute is read by item() below via the pairlist path.
    var_flags = reader.int()
    if var_flags & 0xFF != VECSXP:
        raise ValueError("Rdata.rdx: 'variables' is not a list")
    slices = reader.vector(VECSXP)
    if not var_flags & HAS_ATTR:
        raise ValueError("Rdata.rdx: 'variables' has no names")
    names = reader.item().get("names")
    if not names or len(names) != len(slices):
        raise ValueError("Rdata.rdx: names and slices differ in length")
    return {name: tuple(s) for name, s in zip(names, slices)}


def write(path, text):
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    data_dir, out_dir = argv[1], argv[2]
    slices = variable_slices(data_dir)
    with open(os.path.join(data_dir, "Rdata.rdb"), "rb") as f:
        rdb = f.read()
    os.makedirs(os.path.join(out_dir, "raw"), exist_ok=True)
    sums, paths = [], []
    for name, want in RAW_SHA256.items():
        if name not in slices:
            raise ValueError(f"Rdata.rdx has no object '{name}'")
        lines = read_object(rdb, *slices[name])
        if not isinstance(lines, list) or any(x is not None and not isinstance(x, str) for x in lines):
            raise ValueError(f"object '{name}' is not a character vector")
        raw = "\n".join(x or "" for x in lines)
        got = hashlib.sha256(raw.encode("utf-8")).hexdigest()
        if got != want:
            raise ValueError(f"{name}: raw sha256 {got} differs from MODEL_NOTES ({want})")
        norm = normalise(raw)
        write(os.path.join(out_dir, "raw", name + ".txt"), raw)
        write(os.path.join(out_dir, name + ".txt"), norm)
        sums.append(f"{got}  raw/{name}.txt")
        sums.append(f"{hashlib.sha256(norm.encode('utf-8')).hexdigest()}  {name}.txt")
        paths.append(os.path.join(out_dir, name + ".txt"))
    write(os.path.join(out_dir, "SHA256SUMS"), "\n".join(sums) + "\n")
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (OSError, ValueError, zlib.error, EOFError) as e:
        sys.stderr.write(f"extract_texts: error: {e}\n")
        sys.exit(1)
