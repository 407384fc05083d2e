using System.Buffers.Binary;
using System.Globalization;
using Iommu.Reliability.Tests.Infrastructure;
using Mtty;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Fuzzing;

/// <summary>
/// Raw fuzzing of the device file: <see cref="VfioDeviceFile"/> has no ioctl of its own, so the raw entry is
/// the mdev device file it forwards to (<see cref="MdevDeviceFile.Ioctl"/>, <c>Read</c>, <c>Write</c>), here
/// an mtty mdev in an external-domain TYPE1v2 container whose DMA-loopback ioctl pins through
/// <c>vfio_pin_pages</c>. Oracle: no exception escapes, every result is ≥ 0 or a known negative errno, and
/// the backend's <c>Audit()</c> holds throughout.
/// </summary>
public sealed class DeviceFileFuzzTests(ITestOutputHelper output)
{
    private const ulong Iova = 0x10_0000;

    [Fact]
    public void Mdev_device_file_ioctl_read_write_fuzz_keeps_the_errno_contract()
    {
        ulong seed = ReliabilityBudget.Seed(0xDE_F11E);
        var rng = new Random((int)seed);
        long total = Math.Max(1, ReliabilityBudget.Ops / 4);
        using var bed = new FuzzBed(FuzzScenario.ContainerNoGroup);
        var mdevCore = new MdevCore(bed.Platform);
        var mtty = new MttyDriver(bed.Platform.Memory, pinning: bed.Vfio);
        mtty.Register(mdevCore).ThrowIfError();
        mdevCore.Create(mdevCore.FindParent(mtty.ParentDevice)!.SupportedTypes[0], Guid.NewGuid(), out MdevDevice? mdev).ThrowIfError();
        bed.Vfio.RegisterDevice(mdev!).ThrowIfError();
        bed.Vfio.OpenGroup(bed.Proc, mdev!.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(bed.Container).ThrowIfError();
        bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
        bed.Container.MapDma(new VfioIommuType1DmaMap(32, 3, bed.RwBuf, Iova, FuzzBed.RwPages * FuzzBed.PageSize)).ThrowIfError();
        g.GetDeviceFd(bed.Proc, mdev.Name, out VfioDeviceFile? file, out _).ThrowIfError();
        MdevDeviceFile f = file!.MdevFile!;
        VfioIommuType1 backend = bed.Container.Backend!;

        var byResult = new Dictionary<string, long>();
        var errnos = Enum.GetValues<Errno>().Select(e => -(long)e).ToHashSet();
        uint[] requests = [VfioPci.DeviceGetInfo, VfioPci.DeviceReset, MttyDriver.IoctlDmaLoopback, MttyDriver.IoctlDmaLoopback, 0x3b6c, 0];
        for (long i = 0; i < total; i++)
        {
            int kind = rng.Next(10);
            byte[] arg = Arg(rng);
            long offset = Offset(rng);
            uint request = rng.Next(8) == 0 ? (uint)rng.NextInt64(0, 1L << 32) : requests[rng.Next(requests.Length)];
            string what = kind < 6 ? string.Create(CultureInfo.InvariantCulture, $"ioctl 0x{request:x}") : kind < 8 ? $"read at 0x{offset:x}" : $"write at 0x{offset:x}";
            long r;
            try
            {
                r = kind < 6 ? f.Ioctl(request, arg) : kind < 8 ? f.Read(arg, offset) : f.Write(arg, offset);
                if (i % 16 == 0)
                {
                    backend.Audit();
                }
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                Assert.Fail($"seed {seed}, input {i}: {what} threw {ex.GetType().Name}: {ex.Message}\n{FuzzInputs.HexDump(arg)}{ex.StackTrace}");
                return;
            }

            Assert.True(r >= 0 || errnos.Contains(r), $"seed {seed}, input {i}: {what} returned {r}, not a known errno\n{FuzzInputs.HexDump(arg)}");
            string key = (kind < 6 ? "ioctl" : kind < 8 ? "read" : "write") + ":" + (r >= 0 ? "ok" : ((Errno)(-r)).ToString());
            byResult[key] = byResult.GetValueOrDefault(key) + 1;

            if (rng.Next(500) == 0)
            {
                // A plain UNMAP + re-MAP: the vendor's pins are dropped through the DMA-unmap notifier.
                var u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0);
                bed.Container.UnmapDma(ref u).ThrowIfError();
                bed.Container.MapDma(new VfioIommuType1DmaMap(32, 3, bed.RwBuf, Iova, FuzzBed.RwPages * FuzzBed.PageSize)).ThrowIfError();
            }
        }

        backend.Audit();
        output.WriteLine($"seed {seed}: {total} device-file inputs");
        output.WriteLine(string.Join(", ", byResult.OrderByDescending(kv => kv.Value).Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key}={kv.Value}"))));
    }

    private static byte[] Arg(Random rng)
    {
        if (rng.Next(3) == 0)
        {
            byte[] raw = new byte[rng.Next(0, 48)];
            rng.NextBytes(raw);
            return raw;
        }

        ulong[] lengths = [0, 1, 7, 8, 0x1000, 0x1001, 0x8000, 0x2_0000, 0x20_0000, ulong.MaxValue, ulong.MaxValue - 0xfff];
        ulong Pick() => rng.Next(4) == 0 ? (ulong)rng.NextInt64() : Iova + (ulong)rng.Next(-0x1000, 0x24000);
        byte[] b = new MttyDmaLoopback(Pick(), Pick(), lengths[rng.Next(lengths.Length)]).ToBytes();
        if (rng.Next(4) == 0)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)rng.Next(0, 64)); // argsz edge
        }

        if (rng.Next(8) == 0)
        {
            b[4 + rng.Next(4)] = (byte)rng.Next(256); // flags
        }

        return rng.Next(6) == 0 ? b[..rng.Next(0, b.Length)] : b;
    }

    private static long Offset(Random rng) => rng.Next(6) switch
    {
        0 => VfioPci.Offset(VfioPci.Config, rng.Next(0, 300)),
        1 => VfioPci.Offset(VfioPci.Bar0, rng.Next(0, 12)),
        2 => VfioPci.Offset(VfioPci.Bar1, rng.Next(0, 12)),
        3 => VfioPci.Offset(rng.Next(0, 16), rng.Next(0, 1 << 20)),
        4 => -rng.NextInt64(1, long.MaxValue),
        _ => rng.NextInt64(),
    };
}
