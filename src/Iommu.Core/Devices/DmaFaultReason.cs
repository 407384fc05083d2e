using System.Globalization;

namespace Iommu.Devices;

/// <summary>
/// Why a remapping unit blocked a device's DMA: the hardware's fault reason code, with the name the
/// hardware model gives it. Prints in hex, the way the kernel logs it: <c>0x85 (ScalableWrite)</c>.
/// </summary>
/// <remarks>
/// <para>Iommu.Core cannot know any hardware's codes (it does not reference Iommu.VtD, and an AMD-Vi
/// or SMMU model would have codes of its own), so the code is a number and the name comes from the
/// hardware model that recorded the fault: a VT-d unit fills in the name of its
/// <c>Iommu.VtD.Hardware.VtdFaultReason</c> member, and <c>VtdFaultReasonExtensions.ToVtdFaultReason</c>
/// turns this value back into that enum. The name is a reference to a string the hardware model keeps,
/// so a fault allocates nothing.</para>
/// <para><see cref="Code"/> keeps numeric access; equality compares codes only. The default value
/// (<see cref="None"/>, code 0) is what a DMA that did not fault carries; it prints <c>none</c>. As an
/// <see cref="IFormattable"/>, the formats <c>x</c>, <c>X</c> and <c>d</c> format the code alone
/// (<c>$"{r.FaultReason:x2}"</c> gives <c>85</c>).</para>
/// </remarks>
public readonly struct DmaFaultReason : IEquatable<DmaFaultReason>, ISpanFormattable
{
    /// <summary>Creates a reason from the hardware's code and its name.</summary>
    /// <param name="code">The fault reason code the hardware records (for VT-d, FRCD.FR).</param>
    /// <param name="name">The hardware model's name for the code, or null when it has none.</param>
    public DmaFaultReason(int code, string? name)
    {
        Code = code;
        Name = name;
    }

    /// <summary>No fault (code 0).</summary>
    public static DmaFaultReason None => default;

    /// <summary>The hardware's fault reason code (for VT-d, the FR field of the fault recording register).</summary>
    public int Code { get; }

    /// <summary>The hardware model's name for <see cref="Code"/> (e.g. <c>ScalableWrite</c> for VT-d's 0x85), or null.</summary>
    public string? Name { get; }

    /// <summary>Whether this is <see cref="None"/>.</summary>
    public bool IsNone => Code == 0;

    /// <summary>The code as a number.</summary>
    /// <param name="reason">The reason.</param>
    public static explicit operator int(DmaFaultReason reason) => reason.Code;

    /// <summary>Whether two reasons have the same code.</summary>
    /// <param name="left">One reason.</param>
    /// <param name="right">The other.</param>
    /// <returns>True when the codes are equal.</returns>
    public static bool operator ==(DmaFaultReason left, DmaFaultReason right) => left.Code == right.Code;

    /// <summary>Whether two reasons have different codes.</summary>
    /// <param name="left">One reason.</param>
    /// <param name="right">The other.</param>
    /// <returns>True when the codes differ.</returns>
    public static bool operator !=(DmaFaultReason left, DmaFaultReason right) => left.Code != right.Code;

    /// <summary>The code as a number (the named form of the explicit conversion).</summary>
    /// <returns><see cref="Code"/>.</returns>
    public int ToInt32() => Code;

    /// <inheritdoc/>
    public bool Equals(DmaFaultReason other) => Code == other.Code;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is DmaFaultReason other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => Code;

    /// <summary><c>0x85 (ScalableWrite)</c>; <c>0xff</c> for a code without a name; <c>none</c> for <see cref="None"/>.</summary>
    /// <returns>The text.</returns>
    public override string ToString() => ToString(null, null);

    /// <summary>Formats the reason; <c>x</c>, <c>X</c>, <c>d</c> (with an optional width) format <see cref="Code"/> alone.</summary>
    /// <param name="format">Null or empty for <see cref="ToString()"/>'s text, else a numeric format for the code.</param>
    /// <param name="formatProvider">Culture for a numeric format (invariant by default).</param>
    /// <returns>The text.</returns>
    public string ToString(string? format, IFormatProvider? formatProvider)
    {
        if (!string.IsNullOrEmpty(format))
        {
            return Code.ToString(format, formatProvider ?? CultureInfo.InvariantCulture);
        }

        if (IsNone)
        {
            return "none";
        }

        return Name is null
            ? string.Create(CultureInfo.InvariantCulture, $"0x{Code:x2}")
            : string.Create(CultureInfo.InvariantCulture, $"0x{Code:x2} ({Name})");
    }

    /// <summary>Formats the reason into <paramref name="destination"/> as <see cref="ToString(string?, IFormatProvider?)"/> does.</summary>
    /// <param name="destination">Where the characters go.</param>
    /// <param name="charsWritten">How many were written.</param>
    /// <param name="format">As in <see cref="ToString(string?, IFormatProvider?)"/>.</param>
    /// <param name="provider">As in <see cref="ToString(string?, IFormatProvider?)"/>.</param>
    /// <returns>False when <paramref name="destination"/> is too short.</returns>
    public bool TryFormat(Span<char> destination, out int charsWritten, ReadOnlySpan<char> format, IFormatProvider? provider)
    {
        if (!format.IsEmpty)
        {
            return Code.TryFormat(destination, out charsWritten, format, provider ?? CultureInfo.InvariantCulture);
        }

        if (IsNone)
        {
            return destination.TryWrite(CultureInfo.InvariantCulture, $"none", out charsWritten);
        }

        return Name is null
            ? destination.TryWrite(CultureInfo.InvariantCulture, $"0x{Code:x2}", out charsWritten)
            : destination.TryWrite(CultureInfo.InvariantCulture, $"0x{Code:x2} ({Name})", out charsWritten);
    }
}
