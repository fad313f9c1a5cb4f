;; Cloud detection as a deterministic WASI program (compiled from this text by wasmtime).
;;
;; Reads /inputs/{blue,green,red,nir,swir1}.tensor (uint16, 2-D, one shape, in
;; p2pcompute's tensor format), writes /outputs/mask.tensor (uint8, 255 where
;; cloudy, else 0) and /outputs/cloud_fraction.tensor (a 0-d float64).
;;
;; A pixel is cloud when all three hold (the same rule as cloud.py's graph):
;;   blue > 2500                                  bright
;;   (nir - red) / (nir + red)     < 0.3f         not vegetation (NDVI)
;;   (green - swir1) / (green + swir1) < 0.4f     not snow (NDSI)
;; The indices are computed in float32 exactly as normalized_difference does
;; (uint16 -> f32 is exact, one correctly rounded division), so the mask is
;; bit-identical to the operator graph's. 0/0 gives NaN and NaN < t is false.
;; cloud_fraction = f64(count) / f64(rows * cols), as reduce_mean computes it.
;;
;; The runtime preopens /inputs as fd 3 and /outputs as fd 4.
;; Exit codes: 1 bad input file, 2 shapes differ, 3 out of memory, 4 I/O error.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fd_filestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  ;; 0..7 iovec, 8 nread/nwritten, 12 opened fd, 16..79 filestat, 128.. strings, 1024.. fraction file
  (data (i32.const 128) "blue.tensor")        ;; 11
  (data (i32.const 144) "green.tensor")       ;; 12
  (data (i32.const 160) "red.tensor")         ;; 10
  (data (i32.const 176) "nir.tensor")         ;; 10
  (data (i32.const 192) "swir1.tensor")       ;; 12
  (data (i32.const 208) "mask.tensor")        ;; 11
  (data (i32.const 224) "cloud_fraction.tensor") ;; 21
  (data (i32.const 256) "cloud_detect: bad input tensor (need 2-D uint16)\n")  ;; 49
  (data (i32.const 320) "cloud_detect: input shapes differ\n")                 ;; 34
  (data (i32.const 368) "cloud_detect: out of memory\n")                       ;; 28
  (data (i32.const 400) "cloud_detect: I/O error\n")                           ;; 24

  (global $heap (mut i32) (i32.const 65536))
  (global $rows (mut i32) (i32.const -1))
  (global $cols (mut i32) (i32.const -1))

  (func $fail (param $msg i32) (param $len i32) (param $code i32)
    (i32.store (i32.const 0) (local.get $msg))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (local.get $code)))

  (func $io_error (call $fail (i32.const 400) (i32.const 24) (i32.const 4)))

  ;; make sure linear memory reaches byte $end (exclusive)
  (func $ensure (param $end i32)
    (local $have i32)
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.div_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                               (i32.const 65535)) (i32.const 65536)))
              (i32.const -1))
          (then (call $fail (i32.const 368) (i32.const 28) (i32.const 3)))))))

  ;; read the whole input file at (path, len) to the heap; return the data pointer of its tensor
  (func $read_band (param $path i32) (param $len i32) (result i32)
    (local $fd i32) (local $size i32) (local $ptr i32) (local $got i32) (local $rows i64) (local $cols i64)
    (if (call $path_open (i32.const 3) (i32.const 0) (local.get $path) (local.get $len)
                         (i32.const 0) (i64.const 0x200006) (i64.const 0) (i32.const 0) (i32.const 12))
      (then (call $fail (i32.const 256) (i32.const 49) (i32.const 1))))
    (local.set $fd (i32.load (i32.const 12)))
    (if (call $fd_filestat_get (local.get $fd) (i32.const 16)) (then (call $io_error)))
    (if (i64.gt_u (i64.load (i32.const 48)) (i64.const 0x7fffffff))
      (then (call $fail (i32.const 368) (i32.const 28) (i32.const 3))))
    (local.set $size (i32.wrap_i64 (i64.load (i32.const 48))))
    (if (i32.lt_u (local.get $size) (i32.const 24))
      (then (call $fail (i32.const 256) (i32.const 49) (i32.const 1))))
    (local.set $ptr (global.get $heap))
    (call $ensure (i32.add (local.get $ptr) (local.get $size)))
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (local.get $got) (local.get $size)))
        (i32.store (i32.const 0) (i32.add (local.get $ptr) (local.get $got)))
        (i32.store (i32.const 4) (i32.sub (local.get $size) (local.get $got)))
        (if (call $fd_read (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)) (then (call $io_error)))
        (if (i32.eqz (i32.load (i32.const 8))) (then (call $io_error)))
        (local.set $got (i32.add (local.get $got) (i32.load (i32.const 8))))
        (br $more)))
    (drop (call $fd_close (local.get $fd)))
    ;; header: "P2PT", version 1, dtype 5 (uint16), little-endian, ndim 2, rows, cols
    (if (i32.or
          (i32.ne (i32.load (local.get $ptr)) (i32.const 0x54503250))
          (i32.ne (i32.load offset=4 (local.get $ptr)) (i32.const 0x02000501)))
      (then (call $fail (i32.const 256) (i32.const 49) (i32.const 1))))
    (local.set $rows (i64.load offset=8 (local.get $ptr)))
    (local.set $cols (i64.load offset=16 (local.get $ptr)))
    (if (i32.or (i64.gt_u (local.get $rows) (i64.const 65536)) (i64.gt_u (local.get $cols) (i64.const 65536)))
      (then (call $fail (i32.const 256) (i32.const 49) (i32.const 1))))
    (if (i64.ne (i64.extend_i32_u (local.get $size))
                (i64.add (i64.const 24) (i64.mul (i64.const 2) (i64.mul (local.get $rows) (local.get $cols)))))
      (then (call $fail (i32.const 256) (i32.const 49) (i32.const 1))))
    (if (i32.lt_s (global.get $rows) (i32.const 0))
      (then (global.set $rows (i32.wrap_i64 (local.get $rows)))
            (global.set $cols (i32.wrap_i64 (local.get $cols)))))
    (if (i32.or (i32.ne (global.get $rows) (i32.wrap_i64 (local.get $rows)))
                (i32.ne (global.get $cols) (i32.wrap_i64 (local.get $cols))))
      (then (call $fail (i32.const 320) (i32.const 34) (i32.const 2))))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7))
                               (i32.const -8)))
    (i32.add (local.get $ptr) (i32.const 24)))

  ;; write (ptr, len) to a new file /outputs/(path, plen)
  (func $write_file (param $path i32) (param $plen i32) (param $ptr i32) (param $len i32)
    (local $fd i32) (local $done i32)
    (if (call $path_open (i32.const 4) (i32.const 0) (local.get $path) (local.get $plen)
                         (i32.const 9) (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 12))
      (then (call $io_error)))
    (local.set $fd (i32.load (i32.const 12)))
    (block $out
      (loop $more
        (br_if $out (i32.ge_u (local.get $done) (local.get $len)))
        (i32.store (i32.const 0) (i32.add (local.get $ptr) (local.get $done)))
        (i32.store (i32.const 4) (i32.sub (local.get $len) (local.get $done)))
        (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)) (then (call $io_error)))
        (if (i32.eqz (i32.load (i32.const 8))) (then (call $io_error)))
        (local.set $done (i32.add (local.get $done) (i32.load (i32.const 8))))
        (br $more)))
    (drop (call $fd_close (local.get $fd))))

  ;; (a - b) / (a + b) in float32 for two uint16 values
  (func $nd (param $a i32) (param $b i32) (result f32)
    (local $fa f32) (local $fb f32)
    (local.set $fa (f32.convert_i32_u (local.get $a)))
    (local.set $fb (f32.convert_i32_u (local.get $b)))
    (f32.div (f32.sub (local.get $fa) (local.get $fb)) (f32.add (local.get $fa) (local.get $fb))))

  (func (export "_start")
    (local $blue i32) (local $green i32) (local $red i32) (local $nir i32) (local $swir i32)
    (local $n i32) (local $i i32) (local $off i32) (local $mask i32) (local $count i32) (local $cloud i32)
    (local.set $blue (call $read_band (i32.const 128) (i32.const 11)))
    (local.set $green (call $read_band (i32.const 144) (i32.const 12)))
    (local.set $red (call $read_band (i32.const 160) (i32.const 10)))
    (local.set $nir (call $read_band (i32.const 176) (i32.const 10)))
    (local.set $swir (call $read_band (i32.const 192) (i32.const 12)))
    (local.set $n (i32.mul (global.get $rows) (global.get $cols)))
    ;; mask tensor: 24-byte header then n bytes
    (local.set $mask (global.get $heap))
    (call $ensure (i32.add (i32.add (local.get $mask) (i32.const 24)) (local.get $n)))
    (i32.store (local.get $mask) (i32.const 0x54503250))
    (i32.store offset=4 (local.get $mask) (i32.const 0x02000301))
    (i64.store offset=8 (local.get $mask) (i64.extend_i32_u (global.get $rows)))
    (i64.store offset=16 (local.get $mask) (i64.extend_i32_u (global.get $cols)))
    (block $end
      (loop $pixel
        (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $off (i32.shl (local.get $i) (i32.const 1)))
        ;; the three tests in turn: most pixels fail the first, cheap one
        (local.set $cloud (i32.const 0))
        (if (i32.gt_u (i32.load16_u (i32.add (local.get $blue) (local.get $off))) (i32.const 2500))
          (then
            (if (f32.lt (call $nd (i32.load16_u (i32.add (local.get $nir) (local.get $off)))
                                  (i32.load16_u (i32.add (local.get $red) (local.get $off))))
                        (f32.const 0x1.333334p-2))
              (then
                (local.set $cloud
                  (f32.lt (call $nd (i32.load16_u (i32.add (local.get $green) (local.get $off)))
                                    (i32.load16_u (i32.add (local.get $swir) (local.get $off))))
                          (f32.const 0x1.99999ap-2)))))))
        (i32.store8 offset=24 (i32.add (local.get $mask) (local.get $i))
                    (i32.mul (local.get $cloud) (i32.const 255)))
        (local.set $count (i32.add (local.get $count) (local.get $cloud)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $pixel)))
    (call $write_file (i32.const 208) (i32.const 11) (local.get $mask) (i32.add (i32.const 24) (local.get $n)))
    ;; cloud_fraction tensor: 8-byte header (ndim 0) then one float64, at 1024
    (i32.store (i32.const 1024) (i32.const 0x54503250))
    (i32.store (i32.const 1028) (i32.const 0x00000c01))
    (f64.store (i32.const 1032) (f64.div (f64.convert_i32_u (local.get $count))
                                         (f64.convert_i32_u (local.get $n))))
    (call $write_file (i32.const 224) (i32.const 21) (i32.const 1024) (i32.const 16)))
)
