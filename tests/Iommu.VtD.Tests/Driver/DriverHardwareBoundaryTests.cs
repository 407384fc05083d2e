using System.Reflection;
using System.Reflection.Emit;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The driver reaches the hardware only through its registers, its fault interrupt and the tables in
/// memory (docs/architecture.md): the IL of every method in <c>Iommu.VtD.Driver*</c> may use no member of
/// <see cref="VtdUnit"/> but the MMIO accessors, <see cref="VtdUnit.FaultEvent"/> and <see cref="VtdUnit.PageRequestEvent"/> (its interrupts), no member of
/// <see cref="IVtdDiagnostics"/>, no cast to either, and no public member of a driver type may hand
/// either out.
/// </summary>
public sealed class DriverHardwareBoundaryTests
{
    private static readonly HashSet<string> Mmio = new(StringComparer.Ordinal)
    {
        "Read32", "Read64", "Write32", "Write64", "MmioRead", "MmioWrite",
        "Read32Unguarded", "Read64Unguarded", "Write32Unguarded", "Write64Unguarded",
        "add_FaultEvent", "remove_FaultEvent", "add_PageRequestEvent", "remove_PageRequestEvent",
    };

    private static readonly OpCode[] OneByte = new OpCode[256];
    private static readonly OpCode[] TwoByte = new OpCode[256];

    static DriverHardwareBoundaryTests()
    {
        foreach (FieldInfo f in typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            var op = (OpCode)f.GetValue(null)!;
            ushort v = (ushort)op.Value;
            if (op.Size == 1)
            {
                OneByte[v] = op;
            }
            else
            {
                TwoByte[v & 0xFF] = op;
            }
        }
    }

    [Fact]
    public void The_driver_uses_no_hardware_member_but_registers_and_the_fault_interrupt()
    {
        Type[] driverTypes = [.. typeof(IntelIommu).Assembly.GetTypes().Where(t => t.Namespace?.StartsWith("Iommu.VtD.Driver", StringComparison.Ordinal) == true)];
        Assert.Contains(typeof(IntelIommuUnit), driverTypes);
        List<string> violations = [.. driverTypes.SelectMany(Violations)];
        Assert.True(violations.Count == 0, "the driver reaches the hardware other than through MMIO and memory:\n  " + string.Join("\n  ", violations));
    }

    [Fact]
    public void The_check_finds_a_counter_read_a_downcast_and_an_exposed_unit()
    {
        // The scanner itself must see what the driver once did: read VtdUnit.Statistics, downcast an
        // IDmaRemapper to VtdUnit, and expose the unit through a public property.
        string[] found = [.. Violations(typeof(Probe)).Order(StringComparer.Ordinal)];
        Assert.Equal(4, found.Length);
        Assert.Contains(found, v => v.Contains("get_Statistics", StringComparison.Ordinal));
        Assert.Contains(found, v => v.Contains("get_Activity", StringComparison.Ordinal));
        Assert.Contains(found, v => v.Contains("isinst", StringComparison.Ordinal));
        Assert.Contains(found, v => v.Contains("exposes", StringComparison.Ordinal));
    }

    private static IEnumerable<string> Violations(Type type)
    {
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (PropertyInfo p in type.GetProperties(all))
        {
            if (p.GetMethod is { IsPublic: true } && IsHardware(p.PropertyType) && type.IsVisible)
            {
                yield return $"{type.Name}.{p.Name} exposes {p.PropertyType.Name}";
            }
        }

        foreach (MethodBase m in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
        {
            byte[]? il = m.GetMethodBody()?.GetILAsByteArray();
            if (il is null)
            {
                continue;
            }

            foreach ((OpCode op, MemberInfo member) in Tokens(m, il))
            {
                if (member is Type t)
                {
                    if (IsHardware(t) && (op == OpCodes.Isinst || op == OpCodes.Castclass || op == OpCodes.Unbox_Any))
                    {
                        yield return $"{type.Name}.{m.Name}: {op.Name} {t.Name}";
                    }
                }
                else if (member.DeclaringType == typeof(IVtdDiagnostics)
                    || (member.DeclaringType == typeof(VtdUnit) && !(member is MethodInfo && Mmio.Contains(member.Name))))
                {
                    yield return $"{type.Name}.{m.Name}: {op.Name} {member.DeclaringType!.Name}.{member.Name}";
                }
            }
        }
    }

    private static bool IsHardware(Type t) => t == typeof(VtdUnit) || t == typeof(IVtdDiagnostics);

    // Every member or type token in the method's IL, with the instruction that names it.
    private static IEnumerable<(OpCode, MemberInfo)> Tokens(MethodBase method, byte[] il)
    {
        Type[]? typeArgs = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        int i = 0;
        while (i < il.Length)
        {
            OpCode op = il[i] == 0xFE ? TwoByte[il[++i]] : OneByte[il[i]];
            i++;
            int size = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + (4 * BitConverter.ToInt32(il, i)),
                _ => 4,
            };
            if (op.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok)
            {
                MemberInfo? member = null;
                try
                {
                    member = method.Module.ResolveMember(BitConverter.ToInt32(il, i), typeArgs, methodArgs);
                }
                catch (ArgumentException)
                {
                    // A token this context cannot resolve names no VtdUnit member.
                }

                if (member is not null)
                {
                    yield return (op, member);
                }
            }

            i += size;
        }
    }

    /// <summary>What the driver did before issue 19: the check must report each of these.</summary>
    public sealed class Probe
    {
        private readonly VtdUnit _unit;

        /// <summary>Creates the probe.</summary>
        public Probe(VtdUnit unit) => _unit = unit;

        /// <summary>Exposes the unit, as IntelIommuUnit.Hardware did.</summary>
        public VtdUnit Hardware => _unit;

        /// <summary>Reads counters, registers (allowed) and downcasts.</summary>
        public long Read(Iommu.Devices.IDmaRemapper r) =>
            _unit.Statistics.IotlbHits + _unit.Activity.IotlbInvalidations + (long)_unit.Read64(0x8) + (r is VtdUnit ? 1 : 0);
    }
}
