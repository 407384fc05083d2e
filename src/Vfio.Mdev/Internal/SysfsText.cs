using System.Globalization;
using System.Text;

namespace Vfio.Mdev.Internal;

/// <summary>Parsers for what user space writes into the mdev sysfs files.</summary>
internal static class SysfsText
{
    /// <summary>UUID_STRING_LEN.</summary>
    public const int UuidStringLength = 36;

    /// <summary>
    /// <c>guid_parse</c> over the first 36 characters (<c>uuid_is_valid</c>: hex digits of either case,
    /// hyphens at 8, 13, 18 and 23). What follows is not looked at.
    /// </summary>
    public static bool TryParseGuid(string text, out Guid uuid)
    {
        uuid = Guid.Empty;
        if (text.Length < UuidStringLength)
        {
            return false;
        }

        for (int i = 0; i < UuidStringLength; i++)
        {
            char c = text[i];
            if (i is 8 or 13 or 18 or 23)
            {
                if (c != '-')
                {
                    return false;
                }
            }
            else if (!char.IsAsciiHexDigit(c))
            {
                return false;
            }
        }

        return Guid.TryParseExact(text.AsSpan(0, UuidStringLength), "D", out uuid);
    }

    /// <summary>The number of bytes the write carries (sysfs <c>count</c>).</summary>
    public static int ByteCount(string text) => Encoding.UTF8.GetByteCount(text);

    /// <summary>
    /// <c>kstrtoul(buf, 0, &amp;val)</c>: optional '+', base from the prefix (0x → 16, 0 → 8, else 10),
    /// at least one digit, one trailing newline allowed, no overflow.
    /// </summary>
    public static bool TryParseKstrtoul(string text, out ulong value)
    {
        value = 0;
        ReadOnlySpan<char> s = text;
        if (s.Length > 0 && s[^1] == '\n')
        {
            s = s[..^1];
        }

        if (s.Length > 0 && s[0] == '+')
        {
            s = s[1..];
        }

        NumberStyles style = NumberStyles.None;
        int radix = 10;
        if (s.Length >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        {
            s = s[2..];
            radix = 16;
            style = NumberStyles.AllowHexSpecifier;
        }
        else if (s.Length >= 2 && s[0] == '0')
        {
            radix = 8;
        }

        if (s.IsEmpty)
        {
            return false;
        }

        if (radix == 8)
        {
            foreach (char c in s)
            {
                if (c is < '0' or > '7')
                {
                    return false;
                }

                ulong next = (value * 8) + (ulong)(c - '0');
                if (value > (ulong.MaxValue >> 3))
                {
                    return false;
                }

                value = next;
            }

            return true;
        }

        foreach (char c in s)
        {
            if (radix == 10 ? !char.IsAsciiDigit(c) : !char.IsAsciiHexDigit(c))
            {
                return false;
            }
        }

        return ulong.TryParse(s, style, CultureInfo.InvariantCulture, out value);
    }
}
