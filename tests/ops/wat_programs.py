"""Small WebAssembly test programs (WAT text), shared by the wasm and executor tests."""

LOOP = '(module (memory (export "memory") 1) (func (export "_start") (loop br 0)))'

WRITE_OUTPUT = '''
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "x.tensor")
  ;; a uint8 tensor of shape [3] holding 7 8 9
  (data (i32.const 128) "P2PT\\01\\03\\00\\01\\03\\00\\00\\00\\00\\00\\00\\00\\07\\08\\09")
  (func (export "_start")
    (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 64) (i32.const 8) (i32.const 9)
                         (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 24))
      (then (call $proc_exit (i32.const 5))))
    (i32.store (i32.const 0) (i32.const 128))
    (i32.store (i32.const 4) (i32.const 19))
    (drop (call $fd_write (i32.load (i32.const 24)) (i32.const 0) (i32.const 1) (i32.const 8)))))
'''

# argv -> stdout, environ -> stderr, /outputs/probe.bin = clock (8) + random (16) + errno of
# creating a file in the read-only /inputs (4)
PROBE = '''
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "new.txt")
  (data (i32.const 528) "probe.bin")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 2048)))
    (call $write (i32.const 1) (i32.const 2048) (i32.load (i32.const 20)))
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $environ_get (i32.const 1024) (i32.const 4096)))
    (call $write (i32.const 2) (i32.const 4096) (i32.load (i32.const 20)))
    (drop (call $clock_time_get (i32.const 0) (i64.const 0) (i32.const 256)))
    (drop (call $random_get (i32.const 264) (i32.const 16)))
    (i32.store (i32.const 280)
      (call $path_open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const 7) (i32.const 1)
                       (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 24)))
    (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 528) (i32.const 9) (i32.const 9)
                         (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 24))
      (then unreachable))
    (call $write (i32.load (i32.const 24)) (i32.const 256) (i32.const 28))))
'''

NOT_WASI = '(module (import "env" "now" (func (result i64))) (func (export "_start")))'
NO_START = '(module (func (export "main")))'

# writes /outputs/x.tensor, then never finishes
WRITE_THEN_LOOP = WRITE_OUTPUT.rstrip().removesuffix(")))))") + ")))\n    (loop br 0)))\n"
