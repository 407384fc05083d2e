using Iommu;

namespace Vfio.Mdev.Tests.Infrastructure;

/// <summary>
/// A vendor driver whose callbacks are delegates, recording every call. This one has only the mandatory
/// callbacks (create, remove); <see cref="FakeVendor"/> adds every optional-callback interface, whose
/// members are written here.
/// </summary>
public class MinimalFakeVendor : IMdevParentOps
{
    public MinimalFakeVendor(params string?[] groupNames)
    {
        Groups = groupNames.Length == 0 ? ["a"] : groupNames;
    }

    public IReadOnlyList<string?> Groups { get; set; }

    public string DriverName { get; set; } = "fake";

    public bool NullGroups { get; set; }

    public IReadOnlyList<MdevTypeGroup>? SupportedTypeGroups =>
        NullGroups ? null : Groups.Select(g => MdevTypeGroup.Conventional(g!, _ => 42 - Live.Count, "vfio-pci", "Fake " + g, "a fake type")).Select((g, i) => Groups[i] is null ? new MdevTypeGroup(null, g.Attributes) : g).ToList();

    public List<string> Calls { get; } = [];

    public List<IMdevDevice> Live { get; } = [];

    public Func<IMdevDevice, Errno> OnCreate { get; set; } = _ => Errno.None;

    public Func<IMdevDevice, Errno> OnRemove { get; set; } = _ => Errno.None;

    public Func<IMdevDevice, Errno> OnOpen { get; set; } = _ => Errno.None;

    public Action<IMdevDevice, uint> OnRequest { get; set; } = (_, _) => { };

    public Errno Create(IMdevDevice mdev)
    {
        Errno ret = OnCreate(mdev);
        lock (Calls)
        {
            Calls.Add($"create({mdev.Uuid},{mdev.TypeGroupId})");
            if (ret == Errno.None)
            {
                Live.Add(mdev);
            }
        }

        return ret;
    }

    public Errno Remove(IMdevDevice mdev)
    {
        lock (Calls)
        {
            Calls.Add($"remove({mdev.Uuid})");
            Live.Remove(mdev);
        }

        return OnRemove(mdev);
    }

    public Errno OpenDevice(IMdevDevice mdev)
    {
        Calls.Add("open_device");
        return OnOpen(mdev);
    }

    public void CloseDevice(IMdevDevice mdev) => Calls.Add("close_device");

    public long Read(IMdevDevice mdev, Span<byte> buffer, long offset)
    {
        Calls.Add($"read({buffer.Length},{offset})");
        buffer.Fill(0xab);
        return buffer.Length;
    }

    public long Write(IMdevDevice mdev, ReadOnlySpan<byte> buffer, long offset)
    {
        Calls.Add($"write({buffer.Length},{offset})");
        return buffer.Length;
    }

    public long Ioctl(IMdevDevice mdev, uint cmd, Span<byte> arg)
    {
        Calls.Add($"ioctl(0x{cmd:x})");
        return 7;
    }

    public Errno Mmap(IMdevDevice mdev, VmArea vma)
    {
        Calls.Add("mmap");
        vma.RemapPfnRange(0x1234);
        return Errno.None;
    }

    public void Request(IMdevDevice mdev, uint count)
    {
        Calls.Add($"request({count})");
        OnRequest(mdev, count);
    }
}
