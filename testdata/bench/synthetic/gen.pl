#!/usr/bin/perl
# gen.pl DIR FILES TOTAL_MB SEED: writes FILES files totalling about TOTAL_MB MiB under DIR
# (500 per directory), with sizes spread evenly around the mean (16 files or fewer: all of
# the mean). The bytes are words from a fixed vocabulary, cut at random offsets from a
# 16 MiB pool, so they compress about as well as text does (gzip ~2.3x) and zstd's window
# cannot dedupe them.
# Deterministic for a given SEED: the bench runs it inside the image and on the host.
# Needs only perl-base (Essential in every Debian root).
use strict;
use warnings;

my ($dir, $files, $total_mb, $seed) = @ARGV;
die "usage: gen.pl DIR FILES TOTAL_MB SEED\n" unless defined $seed && $files > 0;
srand($seed);

my @vocab = map { join '', map { chr(97 + int(rand(26))) } 1 .. (2 + int(rand(9))) } 1 .. 4096;
my $pool = '';
while (length($pool) < (16 << 20)) {
    $pool .= join(' ', map { $vocab[int(rand(@vocab))] } 1 .. 64) . "\n";
}
my $plen = length($pool);
my $mean = int(($total_mb << 20) / $files);
my $chunk = 1 << 16;

for my $i (0 .. $files - 1) {
    my $sub = sprintf('%s/d%04d', $dir, int($i / 500));
    if ($i % 500 == 0) { system('mkdir', '-p', $sub) == 0 or die "mkdir $sub\n"; }
    # A few large files are all the mean size (so their total is what was asked for); many
    # small ones spread evenly over 1..2×mean.
    my $size = $files <= 16 ? $mean : 1 + int(rand(2 * $mean));
    open(my $fh, '>:raw', sprintf('%s/f%06d', $sub, $i)) or die "$sub/f$i: $!\n";
    while ($size > 0) {
        my $n = $size < $chunk ? $size : $chunk;
        my $off = int(rand($plen - $n));
        print $fh substr($pool, $off, $n) or die "write: $!\n";
        $size -= $n;
    }
    close($fh) or die "close: $!\n";
}
