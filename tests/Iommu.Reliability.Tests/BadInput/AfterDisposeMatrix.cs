using System.Reflection;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Memory;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using static Iommu.Reliability.Tests.BadInput.Rows;

namespace Iommu.Reliability.Tests.BadInput;

/// <summary>
/// The "after dispose" rows of the bad-input matrix (issue 14): every public entry point of an object
/// that lives on a platform, called after <see cref="Platform.Dispose"/> (or after the object's own
/// Dispose), throws <see cref="ObjectDisposedException"/>. Members are called through reflection with
/// arguments of the right type taken from the same (disposed) world, one row per member; members
/// reflection cannot call (spans, ref returns) have hand-written rows below.
/// </summary>
internal static class AfterDisposeMatrix
{
    public const string AfterPlatformDispose = "after Platform.Dispose";

    /// <summary>How to get, before the dispose, an instance of each platform-owned type.</summary>
    private static readonly Dictionary<Type, Func<BadInputBed, object>> Subjects = new()
    {
        [typeof(Platform)] = c => c.Platform,
        [typeof(PhysicalMemory)] = c => c.Memory,
        [typeof(FrameAllocator)] = c => c.Platform.Frames,
        [typeof(PlatformClock)] = c => c.Platform.Clock,
        [typeof(ContiguousRegion)] = c => c.Platform.Frames.Region,
        [typeof(IommuCore)] = c => c.Iommu,
        [typeof(Bus)] = c => c.PlainBus,
        [typeof(PciBus)] = c => c.Pci,
        [typeof(PciDevice)] = c => c.Dev,
        [typeof(Iommu.Groups.IommuGroup)] = c => c.Dev.IommuGroup!,
        [typeof(IntelIommu)] = c => c.Driver,
        [typeof(VtdUnit)] = c => c.Unit,
        [typeof(DmaPageTable)] = c => ((DmarDomain)c.Domain).PageTable,
        [typeof(VtdImageExporter)] = c => c.Unit,
        [typeof(MdevCore)] = c => c.Mdev,
        [typeof(MdevParent)] = c => c.MttyParent,
        [typeof(MdevType)] = c => c.MttyType,
        [typeof(MdevDevice)] = c => c.NewMdev(),
        [typeof(MdevDeviceFile)] = c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); return f!; },
        [typeof(VfioCore)] = c => c.Vfio,
        [typeof(VfioContainer)] = c => c.Container(),
        [typeof(VfioGroup)] = c => c.Container().Groups[0],
        [typeof(VfioIommuType1)] = c => c.Container().Backend!,
        [typeof(HostPageAllocator)] = c => c.Pages,
        [typeof(ProcessAddressSpace)] = c => c.Proc,
        [typeof(global::Uacce.UacceCore)] = c => c.Uacce,
        [typeof(global::Uacce.UacceDevice)] = c => c.UacceDev,
        [typeof(global::Uacce.UacceQueue)] = c => c.UacceQueue(),
    };

    public static IEnumerable<Type> SubjectTypes => Subjects.Keys;

    public static IEnumerable<BadInputRow> Rows()
    {
        foreach ((Type type, Func<BadInputBed, object> get) in Subjects)
        {
            foreach ((string member, MemberInfo info) in AfterDisposeCoverage.Members(type))
            {
                if (AfterDisposeExemptions.Members.ContainsKey(member) || !Callable(info))
                {
                    continue;
                }

                yield return X<ObjectDisposedException>(member, AfterPlatformDispose + " (reflection)", c => Invoke(c, get, info));
            }
        }

        foreach (BadInputRow r in HandRows())
        {
            yield return r;
        }
    }

    // Spans, ref returns, pointers: reflection cannot call these; HandRows has them.
    internal static bool Callable(MemberInfo m) => m switch
    {
        MethodBase b => !b.GetParameters().Any(p => p.ParameterType.IsByRefLike || p.ParameterType.IsPointer || (p.ParameterType.IsByRef && p.ParameterType.GetElementType()!.IsByRefLike))
                        && !(b is MethodInfo mi && (mi.ReturnType.IsByRefLike || mi.ReturnType.IsByRef || mi.ReturnType.IsPointer))
                        && !b.IsGenericMethodDefinition,
        PropertyInfo p => !p.PropertyType.IsByRefLike && !p.PropertyType.IsPointer,
        _ => false,
    };

    private static object? Invoke(BadInputBed c, Func<BadInputBed, object> get, MemberInfo info)
    {
        object target = get(c);
        var pool = new List<object> { c.Platform, c.Memory, c.Platform.Frames, c.Iommu, c.Pci, c.Dev, c.Dev2, c.Domain, c.Driver, c.Unit, c.Vfio, c.Pages, c.Proc, target };
        c.Platform.Dispose();
        try
        {
            switch (info)
            {
                case ConstructorInfo ctor:
                    return ctor.Invoke(Args(ctor, pool));
                case MethodInfo m:
                    return m.Invoke(m.IsStatic ? null : target, Args(m, pool));
                case PropertyInfo p when p.GetMethod is { IsPublic: true } g:
                    return g.Invoke(target, null);
                case PropertyInfo p:
                    return p.SetMethod!.Invoke(target, [Arg(p.PropertyType, pool)]);
                default:
                    throw new InvalidOperationException(info.ToString());
            }
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw e.InnerException;
        }
    }

    private static object?[] Args(MethodBase m, List<object> pool) => [.. m.GetParameters().Select(p => Arg(p.ParameterType.IsByRef ? p.ParameterType.GetElementType()! : p.ParameterType, pool))];

    private static object? Arg(Type t, List<object> pool)
    {
        foreach (object o in pool)
        {
            if (t.IsInstanceOfType(o))
            {
                return o;
            }
        }

        if (t == typeof(string))
        {
            return "0000:00:01.0";
        }

        if (t.IsArray)
        {
            return Array.CreateInstance(t.GetElementType()!, 1);
        }

        if (t == typeof(Guid))
        {
            return Guid.NewGuid();
        }

        if (t.IsValueType)
        {
            return Nullable.GetUnderlyingType(t) is null ? Activator.CreateInstance(t) : null;
        }

        if (typeof(Delegate).IsAssignableFrom(t))
        {
            MethodInfo invoke = t.GetMethod("Invoke")!;
            var ps = invoke.GetParameters().Select(p => System.Linq.Expressions.Expression.Parameter(p.ParameterType)).ToArray();
            System.Linq.Expressions.Expression body = invoke.ReturnType == typeof(void)
                ? System.Linq.Expressions.Expression.Empty()
                : System.Linq.Expressions.Expression.Default(invoke.ReturnType);
            return System.Linq.Expressions.Expression.Lambda(t, body, ps).Compile();
        }

        return null;
    }

    private static IEnumerable<BadInputRow> HandRows()
    {
        const string A = AfterPlatformDispose;
        VfioIommuType1DmaMap map = new(32, 3, 0x1000, 0x10_0000, 4096);
        return
        [
            X<ObjectDisposedException>("PhysicalMemory.Read", A, c => { c.Platform.Dispose(); c.Memory.Read(0x1000, new byte[8]); }),
            X<ObjectDisposedException>("IntelIommu.CacheInvalidateUser", A, c => { var d = (DmarDomain)c.Domain; c.Platform.Dispose(); return c.Driver.CacheInvalidateUser(d, ReadOnlySpan<IommuHwptVtdS1Invalidate>.Empty, out _); }),
            X<ObjectDisposedException>("PhysicalMemory.Write", A, c => { c.Platform.Dispose(); c.Memory.Write(0x1000, new byte[8]); }),
            X<ObjectDisposedException>("PhysicalMemory.TryRead", A, c => { c.Platform.Dispose(); c.Memory.TryRead(0x1000, new byte[8]); }),
            X<ObjectDisposedException>("PhysicalMemory.TryReadUInt64", A, c => { c.Platform.Dispose(); c.Memory.TryReadUInt64(0x1000, new ulong[4]); }),
            X<ObjectDisposedException>("PhysicalMemory.TryWrite", A, c => { c.Platform.Dispose(); c.Memory.TryWrite(0x1000, new byte[8]); }),
            X<ObjectDisposedException>("PhysicalMemory.GetSpan", A, c => { c.Platform.Dispose(); c.Memory.GetSpan(0x1000, 8); }),
            X<ObjectDisposedException>("PhysicalMemory.Frame", A, c => { c.Platform.Dispose(); c.Memory.Frame(0x1000); }),
            X<ObjectDisposedException>("PhysicalMemory.Table", A, c => { c.Platform.Dispose(); c.Memory.Table(0x1000); }),
            X<ObjectDisposedException>("PhysicalMemory.EnterAccess", A, c => { c.Platform.Dispose(); c.Memory.EnterAccess(); }),
            X<ObjectDisposedException>("PhysicalMemory.FindOrClaim", A, c => { c.Platform.Dispose(); c.Memory.FindOrClaim<object>(_ => null, () => new object()); }),
            X<ObjectDisposedException>("ContiguousRegion.Table", A, c => { ContiguousRegion r = c.Platform.Frames.Region; c.Platform.Dispose(); r.Table(r.Start); }),
            X<ObjectDisposedException>("ContiguousRegion.Entry", A, c => { ContiguousRegion r = c.Platform.Frames.Region; c.Platform.Dispose(); r.Entry(r.Start); }),
            X<ObjectDisposedException>("ContiguousRegion.BasePointer", A, c =>
            {
                ContiguousRegion r = c.Platform.Frames.Region;
                c.Platform.Dispose();
                try
                {
                    return typeof(ContiguousRegion).GetProperty(nameof(ContiguousRegion.BasePointer))!.GetValue(r);
                }
                catch (TargetInvocationException e) when (e.InnerException is not null)
                {
                    throw e.InnerException;
                }
            }),
            X<ObjectDisposedException>("FrameAllocator.TryAllocate", A + " (was an access violation)", c => { c.Platform.Dispose(); c.Platform.Frames.TryAllocate(out _); }),
            X<ObjectDisposedException>("IommuCore.DomainAlloc", A + " (was an access violation)", c => { c.Platform.Dispose(); c.Iommu.DomainAlloc(c.Pci); }),
            X<ObjectDisposedException>("IommuCore.DmaMapSg", A, c => { c.Platform.Dispose(); c.Iommu.DmaMapSg(c.Dev, new Scatterlist[] { new(0x1000, 16) }, DmaDataDirection.ToDevice); }),
            X<ObjectDisposedException>("IommuCore.DmaUnmapSg", A, c => { c.Platform.Dispose(); c.Iommu.DmaUnmapSg(c.Dev, new Scatterlist[] { new(0x1000, 16) }, DmaDataDirection.ToDevice); }),
            X<ObjectDisposedException>("Platform.AddPciBus", A + " (silently succeeded)", c => { c.Platform.Dispose(); c.Platform.AddPciBus(1); }),
            X<ObjectDisposedException>("PciDevice.DmaRead", A, c => { c.Platform.Dispose(); c.Dev.DmaRead(null, 0x1000, new byte[8]); }),
            X<ObjectDisposedException>("PciDevice.DmaWrite", A, c => { c.Platform.Dispose(); c.Dev.DmaWrite(null, 0x1000, new byte[8]); }),
            X<ObjectDisposedException>("PciDevice.AtsDmaRead", A, c => { c.Platform.Dispose(); c.Dev.AtsDmaRead(1, 0x1000, new byte[8]); }),
            X<ObjectDisposedException>("PciDevice.AtsDmaWrite", A, c => { c.Platform.Dispose(); c.Dev.AtsDmaWrite(1, 0x1000, new byte[8]); }),
            X<ObjectDisposedException>("PciDevice.WaitForPageGroupResponses", A, c => { c.Platform.Dispose(); c.Dev.WaitForPageGroupResponses(TimeSpan.Zero); }),
            X<ObjectDisposedException>("PciDevice.DmaRead", A + " (with attributes)", c => { c.Platform.Dispose(); c.Dev.DmaRead(1, 0x1000, new byte[8], DmaRequestAttributes.Privileged); }),
            X<ObjectDisposedException>("PciDevice.DmaWrite", A + " (with attributes)", c => { c.Platform.Dispose(); c.Dev.DmaWrite(1, 0x1000, new byte[8], DmaRequestAttributes.Privileged); }),
            X<ObjectDisposedException>("VtdUnit.DmaRead", A + " (with attributes)", c => { c.Platform.Dispose(); c.Unit.DmaRead(c.Dev, 1, 0x1000, new byte[8], DmaRequestAttributes.Execute); }),
            X<ObjectDisposedException>("VtdUnit.Translate", A + " (with attributes)", c => { c.Platform.Dispose(); c.Unit.Translate(c.Dev.RequesterId, 1, 0x1000, 8, DmaAccess.Read, DmaRequestAttributes.Privileged); }),
            X<ObjectDisposedException>("VtdUnit.DmaRead", A, c => { c.Platform.Dispose(); c.Unit.DmaRead(c.Dev, null, 0x1000, new byte[8]); }),
            X<ObjectDisposedException>("VtdUnit.DmaWrite", A, c => { c.Platform.Dispose(); c.Unit.DmaWrite(c.Dev, null, 0x1000, new byte[8]); }),
            X<ObjectDisposedException>("VtdUnit.Dma", A, c => { c.Platform.Dispose(); c.Unit.Dma(c.Dev.RequesterId, null, 0x1000, new byte[8], DmaAccess.Read); }),
            X<ObjectDisposedException>("VtdUnit.Gather", A, c => { c.Platform.Dispose(); return c.Unit.Gather(c.Dev.RequesterId, null, new[] { new DmaSegment(0x1000, 8) }, new byte[8]); }),
            X<ObjectDisposedException>("VtdUnit.Scatter", A, c => { c.Platform.Dispose(); return c.Unit.Scatter(c.Dev.RequesterId, null, new[] { new DmaSegment(0x1000, 8) }, new byte[8]); }),
            X<ObjectDisposedException>("VtdUnit.Transfer", A, c => { c.Platform.Dispose(); c.Unit.Transfer(c.Dev.RequesterId, null, 0x1000, new byte[8], DmaAccess.Read); }),
            X<ObjectDisposedException>("VtdUnit.Read", A, c => { c.Platform.Dispose(); c.Unit.Read(c.Dev.RequesterId, null, 0x1000, new byte[8]); }),
            X<ObjectDisposedException>("VtdUnit.Write", A, c => { c.Platform.Dispose(); c.Unit.Write(c.Dev.RequesterId, null, 0x1000, new byte[8]); }),
            X<ObjectDisposedException>("VfioContainer.Ioctl", A, c => { VfioContainer k = c.Container(); c.Platform.Dispose(); return k.Ioctl(VfioUapi.VFIO_GET_API_VERSION, Span<byte>.Empty); }),
            X<ObjectDisposedException>("VfioContainer.MapDma", A + " (was an access violation)", c => { VfioContainer k = c.Container(); c.Platform.Dispose(); return k.MapDma(map); }),
            X<ObjectDisposedException>("VfioContainer.GetInfo", A, c => { VfioContainer k = c.Container(); c.Platform.Dispose(); return k.GetInfo(new byte[64]); }),
            X<ObjectDisposedException>("VfioGroup.Ioctl", A, c => { VfioGroup g = c.Group(); c.Platform.Dispose(); return g.Ioctl(VfioUapi.VFIO_GROUP_GET_STATUS, new byte[8]); }),
            X<ObjectDisposedException>("VfioIommuType1.Ioctl", A, c => { VfioContainer k = c.Container(); c.Platform.Dispose(); return k.Backend!.Ioctl(c.Proc, VfioUapi.VFIO_IOMMU_GET_INFO, new byte[16]); }),
            X<ObjectDisposedException>("VfioCore.DmaRw", A, c => { c.Platform.Dispose(); return c.Vfio.DmaRw(c.Dev, 0x1000, new byte[8], false); }),
            X<ObjectDisposedException>("UacceQueue.Ioctl", A, c => { global::Uacce.UacceQueue q = c.UacceQueue(); c.Platform.Dispose(); return q.Ioctl(global::Uacce.UacceCommands.StartQ, new byte[4]); }),
            X<ObjectDisposedException>("ProcessAddressSpace.Read", A, c => { ulong va = c.Proc.Mmap(4096); c.Platform.Dispose(); return c.Proc.Read(va, new byte[8]); }),
            X<ObjectDisposedException>("ProcessAddressSpace.Write", A, c => { ulong va = c.Proc.Mmap(4096); c.Platform.Dispose(); return c.Proc.Write(va, new byte[8]); }),
            X<ObjectDisposedException>("MdevCore.Create", A + " (silently succeeded)", c => { MdevType t = c.MttyType; c.Platform.Dispose(); return c.Mdev.Create(t, Guid.NewGuid(), out _); }),
            X<ObjectDisposedException>("MdevDeviceFile.Read", A, c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); c.Platform.Dispose(); return f!.Read(new byte[4], 0); }),
            X<ObjectDisposedException>("MdevDeviceFile.Write", A, c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); c.Platform.Dispose(); return f!.Write(new byte[4], 0); }),
            X<ObjectDisposedException>("MdevDeviceFile.Ioctl", A, c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); c.Platform.Dispose(); return f!.Ioctl(0, Span<byte>.Empty); }),
            X<ObjectDisposedException>("MdevDeviceFile.Read", "after MdevDeviceFile.Dispose", c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); f!.Dispose(); return f.Read(new byte[4], 0); }),
            X<ObjectDisposedException>("MdevDeviceFile.Ioctl", "after MdevDeviceFile.Dispose", c => { c.NewMdev().Open(out MdevDeviceFile? f).ThrowIfError(); f!.Dispose(); return f.Ioctl(0, Span<byte>.Empty); }),
        ];
    }
}
