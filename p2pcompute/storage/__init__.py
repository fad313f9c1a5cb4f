"""Content-addressed storage: CIDs, UnixFS import/export, blockstore, CAR files.

Package map:
    cid.py         CIDv0/v1, multihash (sha2-256), multibase (base32, base58btc, base16), strict parsing
    dagpb.py       dag-pb PBNode/PBLink codec: canonical encoding as kubo writes it, strict decoding
    unixfs.py      the UnixFS Data protobuf message (file, directory, symlink, ...), strict decoding
    importer.py    streaming importer making the same DAG and CIDs as ``ipfs add`` (files, directories)
    exporter.py    streaming exporter: file bytes (with byte ranges) and directory listings from a DAG
    blockstore.py  blocks in <data dir>/blocks: atomic writes, verified reads, pins, GC, size limit
    car.py         CARv1 streaming reader (every block verified) and writer, DAG export
    service.py     the daemon's storage service: its blockstore, add/cat over the control API
    bitswap_pb.py  the bitswap wire message (1.0.0/1.1.0/1.2.0), hand-written protobuf codec
    bitswap.py     bitswap decisions as pure state machines: Engine (serving), Session (fetching a DAG)
    bitswap_service.py  BitswapService: bitswap 1.2.0 driven over a node's Transport
    dataref.py     DataRef: URI (ipfs, http(s), gateway, kubo-rpc, file), headers, credentials name, range, expect
    sources.py     fetch a DataRef into the blockstore, verified: http(s), trustless gateway CAR, kubo RPC, files, ipfs
    registry.py    data registry logic: signed records with self-certifying handles, HMAC-signed links with ranges
    registry_service.py  RegistryService: /data/register, /data/{handle}, /data/sign, /data/link; records in the DHT
"""
