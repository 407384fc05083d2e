using Iommu.Reliability.Tests.Infrastructure;

namespace Iommu.Reliability.Tests.BadInput;

/// <summary>What a bad-input call must do.</summary>
internal abstract record BadInputOutcome
{
    public sealed record Returns(Errno Errno) : BadInputOutcome
    {
        public override string ToString() => Errno == Errno.None ? "returns 0" : $"returns {Errno} ({(int)Errno})";
    }

    public sealed record Throws(Type Exception) : BadInputOutcome
    {
        public override string ToString() => $"throws {Exception.Name}";
    }

    public sealed record Is(object? Value) : BadInputOutcome
    {
        public override string ToString() => $"is {Value ?? "null"}";
    }
}

/// <summary>One row of the matrix: the entry point (<c>Type.Method</c>, <c>Type..ctor</c>), the bad input, the call, and the outcome.</summary>
internal sealed record BadInputRow(string Member, string Case, Func<BadInputBed, object?> Call, BadInputOutcome Expect)
{
    public string Id => $"{Member}: {Case}";
}

/// <summary>Row builders.</summary>
internal static class Rows
{
    public static BadInputRow E(string member, string @case, Func<BadInputBed, object?> call, Errno errno) => new(member, @case, call, new BadInputOutcome.Returns(errno));

    public static BadInputRow X<TException>(string member, string @case, Func<BadInputBed, object?> call)
        where TException : Exception => new(member, @case, call, new BadInputOutcome.Throws(typeof(TException)));

    public static BadInputRow X<TException>(string member, string @case, Action<BadInputBed> call)
        where TException : Exception => new(member, @case, c => { call(c); return null; }, new BadInputOutcome.Throws(typeof(TException)));

    public static BadInputRow V(string member, string @case, Func<BadInputBed, object?> call, object? value) => new(member, @case, call, new BadInputOutcome.Is(value));

    public static BadInputRow Ok(string member, string @case, Action<BadInputBed> call) => new(member, @case, c => { call(c); return "no exception"; }, new BadInputOutcome.Is("no exception"));
}
